"""``report.html``: one self-contained page per batch output folder, for an operator's morning glance.

Per scene: a quicklook (the scene in true colour with the mask over it, from overviews only), the legend with
each class's share, the time taken, the seam figure, warnings, and the failures with their messages; the
batch's totals on top. Everything is inside the one file (images as ``data:`` URIs, no scripts or fonts from
the network), so it opens from a mail attachment or a network share as well as from the folder.

Quicklooks never read a raster at full resolution: a mask or scene larger than :data:`DIRECT_EDGE` is read
from its overviews (a COG mask has them; a scene has them if ``gdaladdo`` gave it some), else the page says
why the picture is missing. The true colour comes from the bands named red, green and blue (descriptions, or
the sensor a product name tells), stretched between the 2nd and 98th percentiles.

:func:`write_report` is called by :func:`geoseg.batch.runner.run_batch` for each output folder and by
``geoseg report FOLDER``, which reads the scenes' outcomes from the batch's log (:func:`scenes_from_log`).
"""

from __future__ import annotations

import base64
import html
import json
import math
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from geoseg.bands import band_matches
from geoseg.errors import ConfigError
from geoseg.io.integrity import publish_text
from geoseg.io.writing import NODATA
from geoseg.sensors import sensor_from_name
from geoseg.textfiles import read_text

REPORT_NAME = "report.html"
#: A quicklook's longest side in pixels.
QUICKLOOK_EDGE = 480
#: A raster without overviews is read for a quicklook only up to this many pixels on its longest side.
DIRECT_EDGE = 2048
#: The mask's share of a quicklook pixel's colour over the scene's true colour.
MASK_OPACITY = 0.45
#: The largest log line and mask Item the report reads (geoseg writes a few KB of each).
MAX_EVENT_BYTES, MAX_ITEM_BYTES = 1 * 2**20, 16 * 2**20


@dataclass(frozen=True)
class ReportScene:
    """One scene's outcome, as the batch recorded it."""

    input: str
    output: str
    status: str  # done | skipped | failed | cancelled
    seconds: float | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    reason: str | None = None  # why it was skipped


@dataclass(frozen=True)
class Quicklook:
    png: bytes | None
    note: str | None = None  # why there is no picture, or what it leaves out


def scenes_from_log(log: Path) -> list[ReportScene]:
    """The latest outcome of each scene in a batch's JSON-lines log (:class:`geoseg.batch.log.EventLog`), in
    the order the scenes first appear; lines that are not JSON are passed over."""
    latest: dict[str, ReportScene] = {}
    with open(log, encoding="utf-8", errors="replace") as lines:  # years of nightly runs: a line at a time
        for line in lines:
            if len(line) > MAX_EVENT_BYTES:  # not an event geoseg wrote
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            scene = _event_scene(event)
            if scene is not None:
                latest[scene.input] = scene
    return list(latest.values())


def _event_scene(event: object) -> ReportScene | None:
    """A scene's outcome from one log event (a finished, skipped, failed or cancelled scene), or None."""
    if not isinstance(event, dict):
        return None
    kind = str(event.get("event", ""))
    if not kind.startswith("scene_") or kind == "scene_start" or "input" not in event:
        return None
    seconds, warnings = event.get("seconds"), event.get("warnings")
    return ReportScene(
        input=str(event["input"]), output=str(event.get("output", "")), status=kind.removeprefix("scene_"),
        seconds=float(seconds) if isinstance(seconds, (int, float)) else None,
        warnings=[str(w) for w in warnings] if isinstance(warnings, list) else [],
        error=str(event["error"]) if event.get("error") else None,
        reason=str(event["reason"]) if event.get("reason") else None)


def write_report(folder: Path, scenes: list[ReportScene], title: str | None = None) -> Path:
    """Write ``folder/report.html`` for ``scenes`` (those whose output lies in ``folder``), whole or not at all."""
    here = [s for s in scenes if Path(s.output).parent.resolve() == folder.resolve()]
    page = render(here, title or f"geoseg batch: {folder.resolve().name or folder}")
    path = folder / REPORT_NAME
    publish_text(path, page, "the batch report ")
    return path


def render(scenes: list[ReportScene], title: str) -> str:
    """The page (see module docstring)."""
    counts = {s: sum(x.status == s for x in scenes) for s in ("done", "skipped", "failed", "cancelled")}
    areas: dict[str, tuple[str, float]] = {}  # class name -> (colour, hectares)
    sections = []
    for scene in scenes:
        item = _item(Path(scene.output)) if scene.status in ("done", "skipped") else None
        classes = _classes(item)
        for c in classes:
            if c.get("hectares") is not None:
                colour, total = areas.get(c["name"], (c["color"], 0.0))
                areas[c["name"]] = (colour, total + c["hectares"])
        sections.append(_scene_section(scene, item, classes))
    seconds = sum(s.seconds or 0.0 for s in scenes if s.status == "done")
    totals = " · ".join(f"{n} {k}" for k, n in counts.items() if n) or "no scenes"
    area_rows = "".join(f"<tr><td>{_swatch(colour)} {html.escape(name)}</td><td>{ha:,.1f} ha</td></tr>"
                        for name, (colour, ha) in areas.items())
    generated = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return PAGE.format(
        title=html.escape(title), totals=html.escape(totals), seconds=f"{seconds:,.1f}", generated=generated,
        failed_class="bad" if counts["failed"] else "good",
        areas=(f"<table class='areas'><tr><th>class</th><th>area over the done and skipped scenes</th></tr>"
               f"{area_rows}</table>" if area_rows else ""),
        sections="\n".join(sections), images=sum(s.count("<img ") for s in sections))


def _scene_section(scene: ReportScene, item: dict[str, Any] | None, classes: list[dict[str, Any]]) -> str:
    name = html.escape(Path(scene.input).name)
    status = html.escape(scene.status)
    parts = [f"<section class='scene {status}'><h2>{name} <span class='status'>{status}</span></h2>",
             f"<p class='paths'>{html.escape(scene.input)} &rarr; {html.escape(scene.output)}</p>"]
    facts = []
    if scene.seconds is not None:
        facts.append(f"{scene.seconds:,.1f} s")
    if scene.reason:
        facts.append(html.escape(scene.reason))
    props = (item or {}).get("properties", {})
    if props.get("geoseg:model"):
        facts.append(f"model {html.escape(str(props['geoseg:model']))}")
    if props.get("geoseg:seam_disagreement") is not None:
        facts.append(f"patches disagreed on {100 * float(props['geoseg:seam_disagreement']):.2f} % of the valid "
                     f"pixels before blending")
    if facts:
        parts.append(f"<p class='facts'>{' · '.join(facts)}</p>")
    if scene.error:
        parts.append(f"<p class='error'>{html.escape(scene.error)}</p>")
    if item is not None:
        look = quicklook(Path(scene.output), _source(item))
        if look.png is not None:
            data = base64.b64encode(look.png).decode("ascii")
            parts.append(f"<img src='data:image/png;base64,{data}' alt='quicklook of {name}'>")
        if look.note:
            parts.append(f"<p class='note'>{html.escape(look.note)}</p>")
        legend = "".join(f"<li>{_swatch(c['color'])} {html.escape(c['name'])}: {c['percentage']:.2f} %</li>"
                         for c in classes if c.get("percentage") is not None)
        if legend:
            parts.append(f"<ul class='legend'>{legend}</ul>")
    if scene.warnings:
        parts.append("<ul class='warnings'>" + "".join(f"<li>{html.escape(w)}</li>" for w in scene.warnings)
                     + "</ul>")
    parts.append("</section>")
    return "\n".join(parts)


def _swatch(colour: str) -> str:
    return f"<span class='swatch' style='background:{html.escape(colour)}'></span>"


def _item(mask: Path) -> dict[str, Any] | None:
    """The mask's STAC Item, if it is there, readable and of a sane size (a mask's Item is a few KB)."""
    try:
        item = json.loads(read_text(mask.with_suffix(".json"), MAX_ITEM_BYTES, "a mask's STAC Item"))
    except (ConfigError, ValueError):
        return None
    return item if isinstance(item, dict) else None


def _classes(item: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The mask's classes from its Item: name, colour, share of the valid area and hectares where known."""
    if item is None:
        return []
    try:
        band = item["assets"]["mask"]["raster:bands"][0]
    except (KeyError, IndexError, TypeError):
        return []
    pixel = band.get("spatial_resolution")
    out = []
    for c in band.get("classification:classes", []):
        if c.get("nodata"):
            continue
        colour = c.get("color_hint") or "808080"
        out.append({"name": str(c.get("name", c.get("value"))), "color": f"#{colour}",
                    "percentage": c.get("percentage"),
                    "hectares": c["count"] * pixel * pixel / 1e4 if pixel and "count" in c else None})
    return out


def _source(item: dict[str, Any]) -> Path | None:
    """The scene a mask was made from (its Item's ``derived_from`` raster link), if it is a local file."""
    for link in item.get("links", []):
        href = str(link.get("href", ""))
        if link.get("rel") == "derived_from" and not href.endswith(".json") and "://" not in href:
            return Path(href)
    return None


def quicklook(mask: Path, source: Path | None) -> Quicklook:
    """A PNG of ``mask`` over ``source``'s true colour, at most :data:`QUICKLOOK_EDGE` px, from overviews."""
    try:
        with rasterio.open(mask) as ds:
            shape = _small_shape(ds)
            if shape is None:
                return Quicklook(None, f"{mask.name} has no overviews and is too large to read whole for a "
                                       f"quicklook (--format cog writes them)")
            labels = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
            try:
                palette = ds.colormap(1)
            except ValueError:
                palette = {}
    except rasterio.errors.RasterioError as exc:
        return Quicklook(None, f"{mask.name} cannot be read for a quicklook ({exc})")
    colours = np.zeros((256, 3), np.float32)
    for value, rgba in palette.items():
        if 0 <= value < 256:
            colours[value] = rgba[:3]
    background, note = _true_colour(source, shape)
    valid = labels != NODATA
    overlay = colours[labels]
    if background is None:
        picture = np.where(valid[..., None], overlay, 255.0)
    else:
        mixed = (1 - MASK_OPACITY) * background + MASK_OPACITY * overlay
        picture = np.where(valid[..., None], mixed, background)
    return Quicklook(_png(np.clip(picture, 0, 255).astype(np.uint8)), note)


def _small_shape(ds: rasterio.io.DatasetReader) -> tuple[int, int] | None:
    """The quicklook's (rows, cols) for ``ds``, or None where only a full-resolution read could give it."""
    longest = max(ds.height, ds.width)
    scale = max(1.0, longest / QUICKLOOK_EDGE)
    usable = [f for f in ds.overviews(1) if f <= scale]  # GDAL reads the coarsest overview not coarser than asked
    if longest > DIRECT_EDGE and (not usable or longest / max(usable) > DIRECT_EDGE):
        return None
    return max(1, math.ceil(ds.height / scale)), max(1, math.ceil(ds.width / scale))


def _true_colour(source: Path | None, shape: tuple[int, int]) -> tuple[np.ndarray | None, str | None]:
    """``(rows, cols, 3)`` float32 0..255 of ``source``'s red, green and blue bands, stretched, or None and why."""
    if source is None:
        return None, None
    try:
        with rasterio.open(source) as ds:
            bands = _rgb_bands(ds, source)
            if bands is None:
                return None, f"{source.name}: no bands named red, green and blue; the mask is shown alone"
            if _small_shape(ds) is None:
                return None, (f"{source.name} has no overviews, so its true colour is left out (a full-resolution "
                              f"read); `gdaladdo {source.name}` gives it some")
            rgb = ds.read(list(bands), out_shape=(3, *shape), resampling=Resampling.average, masked=True)
    except (rasterio.errors.RasterioError, OSError) as exc:
        return None, f"{source.name} cannot be read for the quicklook's true colour ({exc})"
    out = np.zeros((*shape, 3), np.float32)
    for i in range(3):
        band = np.ma.filled(rgb[i].astype(np.float64), np.nan)
        finite = band[np.isfinite(band)]
        if finite.size == 0:
            continue
        low, high = np.percentile(finite, (2, 98))
        out[..., i] = np.nan_to_num(np.clip((band - low) / max(high - low, 1e-12), 0, 1) * 255)
    return out, None


def _rgb_bands(ds: rasterio.io.DatasetReader, source: Path) -> tuple[int, int, int] | None:
    """1-based indexes of the red, green and blue bands: by description, else by the sensor the name tells."""
    found = []
    for name in ("red", "green", "blue"):
        hits = [i + 1 for i, d in enumerate(ds.descriptions) if band_matches(d, name)]
        if len(hits) != 1:
            break
        found.append(hits[0])
    else:
        return found[0], found[1], found[2]
    sensor = sensor_from_name(source.name)
    if sensor is not None and len(sensor.bands) == ds.count and {"red", "green", "blue"} <= set(sensor.bands):
        return tuple(sensor.bands.index(n) + 1 for n in ("red", "green", "blue"))  # type: ignore[return-value]
    return None


def _png(rgb: np.ndarray) -> bytes:
    """``(rows, cols, 3)`` uint8 as PNG bytes (GDAL's PNG driver)."""
    with MemoryFile() as memory, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a picture, not a map
        with memory.open(driver="PNG", width=rgb.shape[1], height=rgb.shape[0], count=3, dtype="uint8") as png:
            png.write(np.moveaxis(rgb, -1, 0))
        return memory.read()


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.1em; margin: 0 0 .3em; }}
.summary {{ padding: .6em 1em; border-radius: 6px; }}
.summary.good {{ background: #e8f5e9; }} .summary.bad {{ background: #ffebee; }}
.scene {{ border: 1px solid #ccc; border-radius: 6px; padding: .8em 1em; margin: 1em 0; }}
.scene.failed {{ border-color: #c62828; }} .status {{ font-weight: normal; color: #555; }}
.paths, .note {{ color: #666; font-size: .9em; }} .error {{ color: #b71c1c; font-weight: bold; }}
.warnings li {{ color: #8d6e00; }}
img {{ max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }}
.legend {{ list-style: none; padding: 0; }} .legend li {{ display: inline-block; margin-right: 1.2em; }}
.swatch {{ display: inline-block; width: 1em; height: 1em; vertical-align: middle; border: 1px solid #888; }}
table.areas td, table.areas th {{ padding: .1em .8em .1em 0; text-align: left; }}
#broken {{ display: none; color: #b71c1c; }}
</style>
</head>
<body data-images="{images}">
<h1>{title}</h1>
<div class="summary {failed_class}">
<p><strong>{totals}</strong> · {seconds} s of segmenting · page made {generated}</p>
<p id="broken">Some quicklooks could not be shown.</p>
{areas}
</div>
{sections}
<script>
window.addEventListener("load", function () {{
  var images = document.images, shown = 0;
  for (var i = 0; i < images.length; i++) {{
    if (images[i].complete && images[i].naturalWidth > 0) {{ shown++; }}
  }}
  document.body.setAttribute("data-images-shown", String(shown));
  if (shown < images.length) {{ document.getElementById("broken").style.display = "block"; }}
}});
</script>
</body>
</html>
"""
