"""A run, prepared: everything decided before a pixel is read or a network is loaded.

:func:`prepare_run` opens the scene, checks the output, chooses the model (``auto``: the built-in
one that fits, :func:`choose_builtin`), matches the scene's bands to the model's inputs, decides the
inference grid (:func:`geoseg.engine.resample.resolution_factor`) and lays out patches and blocks
(:func:`geoseg.engine.plan.plan_layout`). ``geoseg run``, ``geoseg batch``, ``geoseg info`` and the
benchmarks share these steps instead of repeating them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from geoseg.bands import match_bands
from geoseg.config import AUTO, RunConfig
from geoseg.engine.plan import Layout, plan_layout
from geoseg.engine.resample import resolution_factor
from geoseg.errors import BandError
from geoseg.io.scene import SceneInfo, open_scene
from geoseg.io.writing import check_free_space, check_output, default_output
from geoseg.models import ModelCard, get_card


@dataclass(frozen=True)
class PreparedRun:
    """One run's decisions (see module docstring)."""

    scene: SceneInfo
    output: Path
    model: str  # the model's name or folder (``auto`` resolved)
    card: ModelCard  # the model's card, with ``--scale`` applied
    bands: tuple[int, ...]  # 1-based scene bands in the model's input order
    band_match: str  # how they were found: given, name or position
    factor: int  # scene pixels per model-grid pixel along each axis
    layout: Layout
    notes: tuple[str, ...]  # warnings for the run summary


def prepare_run(scene_path: str | Path, output: str | Path | None, config: RunConfig,
                card: ModelCard | None = None) -> PreparedRun:
    """Decide everything about a run of ``scene_path`` with ``config``; ``card`` stands for the model
    when a network is given in memory. Raises the user errors of whatever is wrong, before any work."""
    notes: list[str] = []
    scene = open_scene(scene_path)
    out = Path(output) if output is not None else default_output(scene.path)
    check_output(out, scene.path, config.overwrite)
    if scene.crs is None:
        notes.append(f"{scene.path}: has no CRS; the mask copies its pixel grid but will not be georeferenced")

    name = choose_model(scene, config) if card is None else config.model
    card = (card or get_card(name)).with_scaling(config.scale)
    indexes, how = match_bands(scene.descriptions, card.bands, str(scene.path), config.bands)
    if how == "position":
        notes.append(f"{scene.path}: bands have no names; assumed in the model's order "
                     f"({', '.join(card.bands)}); pass --bands if they are not")
    factor = resolution_factor(scene.pixel_size_m, card.resolution_m) if config.match_resolution else 1
    layout = plan_layout(scene.height, scene.width, factor,
                         config.tile_size or card.tile_size,
                         card.overlap if config.overlap is None else config.overlap,
                         config.blend, config.block_size)
    check_free_space(out, scene.width, scene.height)
    return PreparedRun(scene, out, name, card, indexes, how, factor, layout, tuple(notes))


def choose_model(scene: SceneInfo, config: RunConfig) -> str:
    """The model a run of ``scene`` uses: ``config.model``, or the fitting built-in one for ``auto``."""
    return choose_builtin(scene, config.bands) if config.model == AUTO else config.model


def choose_builtin(scene: SceneInfo, bands: Sequence[int | str] | None = None) -> str:
    """The built-in model that fits ``scene``: 6 bands if it has them, L2A if it says so, else L1C."""
    level = "l2a" if _looks_l2a(scene) else "l1c"
    six = f"csmask-6b-{level}"
    if bands is not None:
        return six if len(bands) == 6 else f"csmask-4b-{level}"
    try:
        match_bands(scene.descriptions, get_card(six).bands, str(scene.path))
        return six
    except BandError:
        return f"csmask-4b-{level}"


def _looks_l2a(scene: SceneInfo) -> bool:
    text = " ".join([scene.path.name, *scene.tags.values()]).upper()
    return "L2A" in text or "LEVEL-2A" in text or "SURFACE REFLECTANCE" in text
