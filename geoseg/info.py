"""A plain description of a scene as geoseg sees it, for ``geoseg info``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from geoseg.bands import match_bands
from geoseg.engine.resample import resolution_factor
from geoseg.errors import BandError
from geoseg.io.items import is_stac_item, item_stack
from geoseg.io.names import remote_name, shown_source
from geoseg.io.products import folder_stack, is_product_folder
from geoseg.io.scene import open_scene
from geoseg.io.sources import BandSource
from geoseg.io.stack import remote_stack, write_stack
from geoseg.models import get_card
from geoseg.prepare import choose_builtin


def describe(path: str | Path) -> dict[str, Any]:
    """What geoseg sees in ``path``: a raster, or a STAC Item or product folder read as its stack of band files
    (then ``inputs`` says which asset or file feeds which of the fitting model's inputs; no file is written)."""
    remote = remote_name(path)
    path = Path(path)
    if remote is None and not (is_product_folder(path) or is_stac_item(path)):
        return _describe(path)
    stack = (remote_stack(remote) if remote is not None else folder_stack(path) if is_product_folder(path) else
             item_stack(path))
    with tempfile.TemporaryDirectory(prefix="geoseg-info-") as tmp:
        facts = _describe(write_stack(stack, Path(tmp) / f"{stack.name}.bands.vrt"), stack.sources)
    if remote is not None:
        return {**facts, "path": shown_source(remote), "driver": "remote raster"}
    return {**facts, "path": str(path), "driver": f"{facts['driver']} of {len(stack.sources)} band files"}


def _describe(path: Path, sources: tuple[BandSource, ...] = ()) -> dict[str, Any]:
    scene = open_scene(path)
    name = choose_builtin(scene)
    card = get_card(name)
    inputs: list[str] = []
    try:
        indexes, how = match_bands(scene.descriptions, card.bands, str(scene.path))
        inputs = [f"{wanted} <- {sources[i - 1].name} ({shown_source(sources[i - 1].href)})"
                  for wanted, i in zip(card.bands, indexes, strict=True)] if sources else []
        fit = f"{name} (bands {','.join(map(str, indexes))} matched by {how})"
        if how == "position":  # nothing names the bands: say how to
            fit += "; the bands have no names: pass --sensor (e.g. naip, planetscope) or --bands if not in this order"
    except BandError as exc:
        fit = f"none without --bands: {exc}"
    size = scene.pixel_size_m
    factor = resolution_factor(size, card.resolution_m)
    return {
        "path": str(scene.path),
        "driver": scene.driver,
        "size": f"{scene.width} x {scene.height} ({scene.megapixels:.1f} MP)",
        "bands": list(scene.descriptions),
        "dtype": scene.dtype,
        "crs": scene.crs.to_string() if scene.crs else None,
        "pixel_size_m": round(size, 3) if size else None,
        "nodata": scene.nodata,
        "mask": scene.mask_kind,
        "block_shape": list(scene.block_shape),
        "model": fit,
        "inference_grid": f"1/{factor} of the scene's resolution" if factor > 1 else "scene's own grid",
        # Read over a network when pixels are read (a VRT of remote COGs): a user sees what a run will fetch.
        "remote_sources": list(scene.remote_files),
        **({"inputs": inputs} if sources else {}),
    }
