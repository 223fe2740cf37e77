"""A run, prepared: everything decided before a pixel is read or a network is loaded.

:func:`prepare_run` opens the scene, checks the output, chooses the model (``auto``: the built-in
one that fits, :func:`choose_builtin`), matches the scene's bands to the model's inputs, decides the
inference grid (:func:`geoseg.engine.resample.resolution_factor`) and lays out patches and blocks
(:func:`geoseg.engine.plan.plan_layout`). ``geoseg run``, ``geoseg batch``, ``geoseg info`` and the
benchmarks share these steps instead of repeating them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from geoseg.bands import match_bands
from geoseg.config import AUTO, RunConfig
from geoseg.engine.plan import Layout, plan_layout
from geoseg.engine.resample import resolution_factor
from geoseg.errors import BandError
from geoseg.io.scene import SceneInfo, open_scene
from geoseg.io.sources import OFFSET_TAG, SCALE_TAG
from geoseg.io.stack import STACK_MARK_VALUE
from geoseg.io.writing import check_free_space, check_output, default_output
from geoseg.models import ModelCard, Scaling, get_card
from geoseg.sanity import check_inputs
from geoseg.sensors import Sensor, get_sensor, sensor_from_name


@dataclass(frozen=True)
class PreparedRun:
    """One run's decisions (see module docstring)."""

    scene: SceneInfo
    output: Path | None  # None for pixels held in memory (prepare_grid)
    model: str  # the model's name or folder (``auto`` resolved)
    card: ModelCard  # the model's card, with ``--scale`` applied
    bands: tuple[int, ...]  # 1-based scene bands in the model's input order
    band_match: str  # how they were found: given, name or position
    factor: int  # scene pixels per model-grid pixel along each axis
    layout: Layout
    notes: tuple[str, ...]  # warnings for the run summary


def prepare_run(scene_path: str | Path, output: str | Path | None, config: RunConfig,
                card: ModelCard | None = None, vector: Path | None = None) -> PreparedRun:
    """Decide everything about a run of ``scene_path`` with ``config``; ``card`` stands for the model
    when a network is given in memory; ``vector`` is the polygon layer the run will also write. Raises the
    user errors of whatever is wrong, before any work."""
    scene = open_scene(scene_path)
    out = Path(output) if output is not None else default_output(scene.path)
    prepared = prepare_grid(scene, config, card)
    # After the settings (a bad setting is named first): every file the run writes, against every file it reads.
    check_output(out, scene.path, config.overwrite, probabilities=config.probabilities is not None,
                 uncertainty=config.uncertainty is not None, vector=vector, inputs=scene.local_files)
    check_free_space(out, scene.width, scene.height)
    return replace(prepared, output=out)


def prepare_grid(scene: SceneInfo, config: RunConfig, card: ModelCard | None = None,
                 sample: bool = True) -> PreparedRun:
    """:func:`prepare_run`'s decisions about the model, the bands and the grids of ``scene``, without an
    output (``output`` is None); ``sample`` reads sample windows of the file for the input checks
    (:func:`geoseg.sanity.check_inputs`), which pixels held in memory skip."""
    notes: list[str] = []
    if scene.remote_files and scene.tags.get("GEOSEG_PRODUCT") != STACK_MARK_VALUE:  # not the URL or Item asked for
        shown = ", ".join(scene.remote_files[:3]) + (f" and {len(scene.remote_files) - 3} more"
                                                      if len(scene.remote_files) > 3 else "")
        notes.append(f"{scene.path}: reads {len(scene.remote_files)} remote source(s) over the network: {shown}")
    if scene.crs is None:
        notes.append(f"{scene.path}: has no CRS; the mask copies its pixel grid but will not be georeferenced")

    descriptions, sensor = scene_band_names(scene, config.sensor)
    if sensor is not None and config.sensor is None:
        notes.append(f"{scene.path}: bands have no names; named from the file name as {sensor.name} "
                     f"({', '.join(sensor.bands)}); pass --sensor or --bands if they are not")
    name = choose_model(scene, config) if card is None else config.model
    card = card or get_card(name)
    if SCALE_TAG in scene.tags:  # a stack of a STAC Item's assets: its raster:bands scaling (geoseg.io.stack)
        scale, offset = float(scene.tags[SCALE_TAG]), float(scene.tags.get(OFFSET_TAG, 0.0))
        card = replace(card, scaling=Scaling(integer_scale=scale, integer_offset=offset, float_scale=scale))
    elif config.sensor is not None:  # the scene's own DN -> reflectance, instead of the card's
        card = replace(card, scaling=Scaling(integer_scale=sensor.scale, integer_offset=sensor.offset))
    card = card.with_scaling(config.scale)
    indexes, how = match_bands(descriptions, card.bands, str(scene.path), config.bands)
    if how == "position":
        notes.append(f"{scene.path}: bands have no names; assumed in the model's order "
                     f"({', '.join(card.bands)}); pass --bands or --sensor if they are not")
    factor = resolution_factor(scene.pixel_size_m, card.resolution_m) if config.match_resolution else 1
    found = check_inputs(scene, indexes, card, factor, config.workers) if sample else []
    if found and config.strict_inputs:
        raise BandError(f"{found[0]} (--strict-inputs)")
    notes += found
    layout = plan_layout(scene.height, scene.width, factor,
                         config.tile_size or card.tile_size,
                         card.overlap if config.overlap is None else config.overlap,
                         config.blend, config.block_size)
    return PreparedRun(scene, None, name, card, indexes, how, factor, layout, tuple(notes))


def scene_band_names(scene: SceneInfo, sensor_name: str | None) -> tuple[tuple[str | None, ...], Sensor | None]:
    """The names the scene's bands are matched by: the sensor preset's (``--sensor``, which must have as many
    bands as the scene), else the band descriptions, else a sensor told by the file name when it has as many
    bands as the scene."""
    count = len(scene.descriptions)
    if sensor_name is not None:
        sensor = get_sensor(sensor_name)
        if len(sensor.bands) != count:
            raise BandError(f"{scene.path}: has {count} bands but a {sensor.name} file has {len(sensor.bands)} "
                            f"({', '.join(sensor.bands)}); with a subset of them, pass --bands by index instead")
        return sensor.bands, sensor
    if any(scene.descriptions):
        return scene.descriptions, None
    sensor = sensor_from_name(scene.path.name)
    if sensor is not None and len(sensor.bands) == count:
        return sensor.bands, sensor
    return scene.descriptions, None


def choose_model(scene: SceneInfo, config: RunConfig) -> str:
    """The model a run of ``scene`` uses: ``config.model``, or the fitting built-in one for ``auto``."""
    return choose_builtin(scene, config.bands, config.sensor) if config.model == AUTO else config.model


def choose_builtin(scene: SceneInfo, bands: Sequence[int | str] | None = None, sensor: str | None = None) -> str:
    """The built-in model that fits ``scene``: 6 bands if it has them, L2A if it says so, else L1C."""
    level = "l2a" if _looks_l2a(scene) or sensor == "sentinel2-l2a" else "l1c"
    six = f"csmask-6b-{level}"
    if bands is not None:
        return six if len(bands) == 6 else f"csmask-4b-{level}"
    try:
        match_bands(scene_band_names(scene, sensor)[0], get_card(six).bands, str(scene.path))
        return six
    except BandError:
        return f"csmask-4b-{level}"


def _looks_l2a(scene: SceneInfo) -> bool:
    text = " ".join([scene.path.name, *scene.tags.values()]).upper()
    return "L2A" in text or "LEVEL-2A" in text or "SURFACE REFLECTANCE" in text


@dataclass(frozen=True)
class VectorRequest:
    """A polygon layer to make from the finished mask (``geoseg run --vector``)."""

    path: Path
    min_area_m2: float = 0.0
    simplify: float = 0.0
