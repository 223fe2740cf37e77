"""Accuracy and area with confidence intervals from a stratified random sample of a map.

The estimators of Olofsson et al. 2014 (Remote Sensing of Environment 148: 42-57, equations 2 to 11), for
a sample stratified by the map's classes: with ``W_i`` the share of the map in class ``i``, ``n_ij`` the
sample points mapped ``i`` and labelled ``j`` by a person, and ``n_i`` the points of stratum ``i``,

* the error matrix in estimated area proportions ``p_ij = W_i n_ij / n_i``;
* user's accuracy ``U_i = p_ii / p_i.``, producer's ``P_j = p_jj / p_.j``, overall ``O = sum p_ii``, each
  with its standard error (equations 5, 6, 7);
* the error-adjusted area of each class ``A p_.k`` (``A`` the map's area) with its standard error
  ``sqrt(sum_i (W_i p_ik - p_ik^2) / (n_i - 1))`` (equations 9, 10).

Confidence intervals are ``estimate ± z SE`` (z = 1.96 for 95 %). tests/assess/test_estimate.py checks the
paper's own example (its section 5) to the digits it prints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoseg.errors import ConfigError

#: z for a two-sided 95 % interval, as the paper and the tools that follow it round it.
Z95 = 1.96


@dataclass(frozen=True)
class AreaAccuracy:
    """The estimates of a stratified sample (see module docstring); arrays are per class, in class order."""

    names: tuple[str, ...]
    counts: np.ndarray  # n_ij: sample points, map rows, reference columns
    mapped_pixels: np.ndarray  # pixels of each class in the map (the strata)
    pixel_area_m2: float | None  # None without a CRS: proportions only
    proportions: np.ndarray  # p_ij
    users: np.ndarray
    users_se: np.ndarray
    producers: np.ndarray
    producers_se: np.ndarray
    overall: float
    overall_se: float
    area_share: np.ndarray  # p_.k
    area_share_se: np.ndarray

    @property
    def area_pixels(self) -> np.ndarray:
        return self.area_share * self.mapped_pixels.sum()

    @property
    def area_pixels_se(self) -> np.ndarray:
        return self.area_share_se * self.mapped_pixels.sum()

    def to_dict(self, z: float = Z95) -> dict:
        ha = None if self.pixel_area_m2 is None else self.pixel_area_m2 / 1e4

        def r(v: float, digits: int = 6) -> float | None:
            return None if not np.isfinite(v) else round(float(v), digits)

        return {
            "overall_accuracy": r(self.overall), "overall_accuracy_ci95": r(z * self.overall_se),
            "sample_points": int(self.counts.sum()),
            "classes": [{
                "value": i, "name": n, "mapped_pixels": int(self.mapped_pixels[i]),
                "mapped_ha": None if ha is None else r(self.mapped_pixels[i] * ha, 3),
                "sample_points": int(self.counts[i].sum()),
                "users_accuracy": r(self.users[i]), "users_accuracy_ci95": r(z * self.users_se[i]),
                "producers_accuracy": r(self.producers[i]), "producers_accuracy_ci95": r(z * self.producers_se[i]),
                "area_share": r(self.area_share[i]), "area_share_ci95": r(z * self.area_share_se[i]),
                "area_pixels": r(self.area_pixels[i], 1), "area_pixels_ci95": r(z * self.area_pixels_se[i], 1),
                "area_ha": None if ha is None else r(self.area_pixels[i] * ha, 3),
                "area_ha_ci95": None if ha is None else r(z * self.area_pixels_se[i] * ha, 3),
            } for i, n in enumerate(self.names)],
            "error_matrix_counts": self.counts.tolist(),
            "error_matrix_proportions": np.round(self.proportions, 6).tolist(),
            "axes": {"rows": "map", "columns": "reference", "labels": list(self.names)},
        }


def estimate(counts: np.ndarray, mapped_pixels: np.ndarray, names: tuple[str, ...],
             pixel_area_m2: float | None = None) -> AreaAccuracy:
    """The stratified estimates of ``counts`` (map rows, reference columns) for strata of ``mapped_pixels``."""
    n = np.asarray(counts, dtype=float)
    big_n = np.asarray(mapped_pixels, dtype=float)
    k = len(names)
    if n.shape != (k, k) or big_n.shape != (k,):
        raise ConfigError(f"an error matrix of {k} classes needs {k}x{k} counts and {k} strata")
    n_i = n.sum(axis=1)
    empty = [names[i] for i in range(k) if big_n[i] > 0 and n_i[i] < 2]
    if empty:
        raise ConfigError(f"the sample has fewer than 2 labelled points in stratum(s) {', '.join(empty)}; "
                          f"label more points there (a standard error needs two)")
    w = big_n / big_n.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(n_i[:, None] > 0, n / n_i[:, None], 0.0)  # n_ij / n_i
        p = w[:, None] * share
        users = np.diag(share)
        users_var = np.where(n_i > 1, users * (1 - users) / (n_i - 1), np.nan)
        col = p.sum(axis=0)
        producers = np.where(col > 0, np.diag(p) / col, np.nan)
        overall = float(np.trace(p))
        overall_var = float(np.nansum(w**2 * users_var))
        # Equation 7, with N_i the mapped pixels: estimated pixels of reference class j.
        n_hat_j = (big_n[:, None] * share).sum(axis=0)
        producers_var = np.full(k, np.nan)
        for j in range(k):
            if n_hat_j[j] <= 0:
                continue
            own = big_n[j] ** 2 * (1 - producers[j]) ** 2 * users[j] * (1 - users[j]) / (n_i[j] - 1)
            others = sum(big_n[i] ** 2 * share[i, j] * (1 - share[i, j]) / (n_i[i] - 1)
                         for i in range(k) if i != j and n_i[i] > 1)
            producers_var[j] = (own + producers[j] ** 2 * others) / n_hat_j[j] ** 2
        area_var = np.nansum(np.where(n_i[:, None] > 1, (w[:, None] * p - p**2) / (n_i[:, None] - 1), 0.0), axis=0)
    return AreaAccuracy(names=tuple(names), counts=n.astype(np.int64), mapped_pixels=big_n.astype(np.int64),
                        pixel_area_m2=pixel_area_m2, proportions=p, users=users, users_se=np.sqrt(users_var),
                        producers=producers, producers_se=np.sqrt(producers_var), overall=overall,
                        overall_se=float(np.sqrt(overall_var)), area_share=col, area_share_se=np.sqrt(area_var))
