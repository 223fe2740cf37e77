"""STAC metadata of masks: an Item beside each mask, a Collection for a batch's output folder (pystac).

The Item (``MASK.json``) says where the mask lies (``proj:``: EPSG code, shape, transform, bbox; a
WGS84 footprint), what its band holds (``raster:bands``: data type, nodata, ground resolution, and the
``classification:classes`` with value, name, colour, pixel count and share), where it came from (a
``derived_from`` link to the scene) and which model made it (``geoseg:*`` properties: the model card's
name and description, the settings). Assets: the mask (COG or GeoTIFF), its QGIS style, and the
probabilities when written. Links are relative, so a folder of masks can be moved as a whole.

Extension versions are those whose JSON schemas the tests keep offline (tests/data/stac): projection
v1.0.0, raster v1.0.0, classification v1.1.0 (with ``count``, ``percentage`` and ``nodata`` on each
class, as classification v2 names them). This machine cannot reach the v2 schemas to validate against.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

from geoseg.export.legend import hex_color
from geoseg.export.stats import ClassStat
from geoseg.models.card import ClassInfo

PROJECTION = "https://stac-extensions.github.io/projection/v1.0.0/schema.json"
RASTER = "https://stac-extensions.github.io/raster/v1.0.0/schema.json"
CLASSIFICATION = "https://stac-extensions.github.io/classification/v1.1.0/schema.json"
EXTENSIONS = [PROJECTION, RASTER, CLASSIFICATION]

COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
GTIFF_TYPE = "image/tiff; application=geotiff"


def class_objects(classes: tuple[ClassInfo, ...], stats: list[ClassStat] | None, nodata: int) -> list[dict]:
    """``classification:classes`` of a mask, with counts and shares where known, and its nodata value."""
    counted = {s.value: s for s in stats or []}
    objects = []
    for c in classes:
        obj: dict[str, Any] = {"value": c.value, "name": c.name, "description": c.name,
                               "color_hint": hex_color(c.color)}
        if c.value in counted:
            obj["count"] = counted[c.value].pixels
            obj["percentage"] = round(100 * counted[c.value].share, 4)
        objects.append(obj)
    objects.append({"value": nodata, "name": "nodata", "description": "no data in the scene", "nodata": True})
    return objects


def mask_item(mask: Path, *, crs: CRS | None, transform: Any, width: int, height: int, pixel_size_m: float | None,
              classes: tuple[ClassInfo, ...], stats: list[ClassStat] | None, nodata: int, fmt: str,
              source: Path | None = None, properties: dict[str, Any] | None = None,
              sidecars: dict[str, Path] | None = None, acquired: tuple[dt.datetime, str] | None = None
              ) -> dict[str, Any]:
    """The STAC Item of one mask, as a dict ready for JSON (hrefs relative to the mask's folder).

    ``datetime`` is when the scene was acquired (``acquired``: the time and what said so, e.g. its product
    name), else the source file's modification time, and ``geoseg:datetime_source`` says which; ``created``
    is when the mask was made. The footprint is the scene's outline projected to WGS84 (its edges densified),
    not the box of its bounds."""
    import pystac

    bounds = (transform.c, transform.f + height * transform.e, transform.c + width * transform.a, transform.f)
    bbox = [min(bounds[0], bounds[2]), min(bounds[1], bounds[3]), max(bounds[0], bounds[2]), max(bounds[1], bounds[3])]
    geometry, wgs84 = footprint(crs, transform, width, height)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    when, said = acquired if acquired is not None else _file_time(source, now)
    props: dict[str, Any] = {
        "created": now.isoformat().replace("+00:00", "Z"),
        "geoseg:datetime_source": said,
        "proj:epsg": crs.to_epsg() if crs is not None else None,
        "proj:shape": [height, width],
        "proj:transform": [transform.a, transform.b, transform.c, transform.d, transform.e, transform.f],
        "proj:bbox": bbox,
        **(properties or {}),
    }
    item = pystac.Item(id=mask.stem, geometry=geometry, bbox=wgs84, datetime=when, properties=props,
                       stac_extensions=list(EXTENSIONS))
    band: dict[str, Any] = {"data_type": "uint8", "nodata": nodata, "sampling": "area",
                            "classification:classes": class_objects(classes, stats, nodata)}
    if pixel_size_m:
        band["spatial_resolution"] = round(pixel_size_m, 6)
    item.add_asset("mask", pystac.Asset(href=f"./{mask.name}", media_type=COG_TYPE if fmt == "cog" else GTIFF_TYPE,
                                        roles=["data"], title="class mask",
                                        extra_fields={"raster:bands": [band]}))
    for key, path in (sidecars or {}).items():
        media = {".qml": "application/xml", ".tif": COG_TYPE if fmt == "cog" else GTIFF_TYPE,
                 ".xml": "application/xml"}.get(path.suffix)
        roles = {"style": ["style"], "probabilities": ["data"], "uncertainty": ["data"],
                 "legend": ["metadata"]}.get(key, ["metadata"])
        item.add_asset(key, pystac.Asset(href=f"./{path.name}", media_type=media, roles=roles))
    if source is not None:
        item.add_link(pystac.Link("derived_from", str(source.resolve()), media_type=GTIFF_TYPE, title="source scene"))
    return item.to_dict(include_self_link=False, transform_hrefs=False)


def footprint(crs: CRS | None, transform: Any, width: int, height: int, points: int = 21
              ) -> tuple[dict[str, Any] | None, list[float] | None]:
    """The outline of a ``width x height`` grid in WGS84 (each edge densified to ``points`` points, so a UTM
    scene's slanted edges stay slanted) and its lon/lat bbox; ``(None, None)`` without a CRS."""
    if crs is None:
        return None, None
    steps = [i / (points - 1) for i in range(points)]
    ring = ([(width * f, 0.0) for f in steps] + [(float(width), height * f) for f in steps[1:]]
            + [(width * (1 - f), float(height)) for f in steps[1:]] + [(0.0, height * (1 - f)) for f in steps[1:]])
    xs, ys = zip(*(transform @ (col, row) for col, row in ring), strict=True)
    lons, lats = warp_transform(crs, "EPSG:4326", list(xs), list(ys))
    coordinates = [[round(x, 9), round(y, 9)] for x, y in zip(lons, lats, strict=True)]
    return ({"type": "Polygon", "coordinates": [coordinates]},
            [min(lons), min(lats), max(lons), max(lats)])


def _file_time(source: Path | None, fallback: dt.datetime) -> tuple[dt.datetime, str]:
    """The source file's modification time (UTC) where the acquisition is not known."""
    try:
        stamp = source.stat().st_mtime if source is not None else None
    except OSError:
        stamp = None
    if stamp is None:
        return fallback, "processing time (the source's acquisition is not known)"
    return (dt.datetime.fromtimestamp(stamp, dt.UTC).replace(microsecond=0),
            "the source file's modification time (its acquisition is not in its name or tags)")


def collection(folder: Path, items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The STAC Collection of the items written in ``folder`` (their extents, their classes in summaries)."""
    import pystac

    boxes = [i["bbox"] for i in items if i.get("bbox")]
    bbox = [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
            max(b[3] for b in boxes)] if boxes else [-180.0, -90.0, 180.0, 90.0]
    times = sorted(i["properties"]["datetime"] for i in items) or [None]
    start = pystac.utils.str_to_datetime(times[0]) if times[0] else None
    end = pystac.utils.str_to_datetime(times[-1]) if times[-1] else None
    coll = pystac.Collection(
        id=name, description=f"geoseg masks in {folder}", license="other",
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([[start, end]])),
        stac_extensions=[CLASSIFICATION])
    classes = {}
    for item in items:
        for c in item["assets"]["mask"]["raster:bands"][0]["classification:classes"]:
            classes.setdefault(c["value"], {k: v for k, v in c.items() if k not in ("count", "percentage")})
    if classes:
        coll.summaries.add("classification:classes", [classes[v] for v in sorted(classes)])
    data = coll.to_dict(include_self_link=False, transform_hrefs=False)
    data["links"] += [{"rel": "item", "href": f"./{i['id']}.json", "type": "application/geo+json"} for i in items]
    return data
