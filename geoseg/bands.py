"""Which scene band feeds which model input: by 1-based index, by description, or by common name.

Models name their inputs by common names (``blue``, ``nir``, ``swir16``: the STAC ``eo:common_name``
vocabulary). A scene band matches a name when its description is that name, or contains it as a
word, or contains one of the name's Sentinel-2 band codes (``B02`` ...). Landsat's band numbers
mean different colours per sensor, so they are never guessed: pass ``--bands`` for those.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from geoseg.errors import BandError
from geoseg.sensors import SENSORS

#: Unambiguous alternative spellings of each common name (lower case).
BAND_ALIASES: dict[str, tuple[str, ...]] = {
    "coastal": ("b01", "b1", "coastal_aerosol"),
    "blue": ("b02",),
    "green": ("b03",),
    "red": ("b04",),
    "rededge1": ("b05",),
    "rededge2": ("b06",),
    "rededge3": ("b07",),
    "nir": ("b08", "nir08", "nir_broad"),
    "nir08": ("b8a", "narrow_nir"),
    "swir16": ("b11", "swir1", "swir_1"),
    "swir22": ("b12", "swir2", "swir_2"),
}


def _words(description: str | None) -> set[str]:
    if not description:
        return set()
    text = description.lower()
    return {text.strip(), *re.split(r"[^a-z0-9_]+", text)} - {""}


def band_matches(description: str | None, name: str) -> bool:
    """True when a band ``description`` names the common band ``name`` (or one of its aliases)."""
    words = _words(description)
    key = name.lower()
    return key in words or any(alias in words for alias in BAND_ALIASES.get(key, ()))


def resolve_band(spec: int | str, descriptions: Sequence[str | None], path: str) -> int:
    """One ``--bands`` entry to a 1-based band index of the scene."""
    count = len(descriptions)
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        index = int(spec)
        if not 1 <= index <= count:
            raise BandError(f"{path}: band {index} does not exist; the scene has bands 1..{count}")
        return index
    hits = [i + 1 for i, d in enumerate(descriptions) if band_matches(d, spec)]
    if len(hits) != 1:
        shown = ", ".join(f"{i + 1}={d or '(no name)'}" for i, d in enumerate(descriptions))
        what = "no band" if not hits else f"{len(hits)} bands"
        raise BandError(
            f"{path}: {what} named {spec!r} (bands: {shown}); pass 1-based indexes, e.g. --bands 3,2,1,4"
        )
    return hits[0]


def match_bands(
    descriptions: Sequence[str | None],
    wanted: Sequence[str],
    path: str,
    bands: Sequence[int | str] | None = None,
) -> tuple[tuple[int, ...], str]:
    """1-based scene band indexes for each model input in ``wanted``, and how they were found.

    ``bands`` (from ``--bands``) gives the scene bands in the model's input order, by index or
    name. Without it, bands are matched by name; a scene with unnamed bands and exactly as many
    bands as the model takes is used in order (the second value says ``"position"`` so the caller
    can warn).
    """
    if bands is not None:
        if len(bands) != len(wanted):
            raise BandError(
                f"{path}: --bands lists {len(bands)} bands but the model takes {len(wanted)} "
                f"({', '.join(wanted)}); list one scene band per model input, in that order"
            )
        return tuple(resolve_band(b, descriptions, path) for b in bands), "given"
    found: list[int] = []
    for name in wanted:
        hits = [i + 1 for i, d in enumerate(descriptions) if band_matches(d, name)]
        if len(hits) != 1:
            break
        found.append(hits[0])
    else:
        return tuple(found), "name"
    if len(descriptions) == len(wanted) and not any(descriptions):
        return tuple(range(1, len(wanted) + 1)), "position"
    if len(descriptions) < len(wanted):
        raise BandError(
            f"{path}: has {len(descriptions)} band(s) but the model needs {len(wanted)} "
            f"({', '.join(wanted)}); use a scene with those bands or a model that needs fewer"
        )
    shown = ", ".join(f"{i + 1}={d or '(no name)'}" for i, d in enumerate(descriptions))
    raise BandError(
        f"{path}: cannot tell which bands are the model's {', '.join(wanted)} (the scene has {len(descriptions)} "
        f"bands: {shown}); pass them in that order with --bands, e.g. "
        f"--bands {','.join(str(i) for i in range(1, len(wanted) + 1))}, or name the scene's sensor with --sensor "
        f"({', '.join(SENSORS)})"
    )
