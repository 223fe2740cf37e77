"""STAC Items, ItemCollections and static catalogs as inputs: which file is which, the Items of a collection or
catalog, and an Item's single-band data assets as a :class:`~geoseg.io.sources.Stack` (named by ``eo:bands``
common name, STAC 1.1 ``bands``, or the asset key; ``raster:bands`` scale, offset and nodata kept; the Item's
id, ``updated`` times, datetime and platform as the stack's tags)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from geoseg.errors import ConfigError, OutputError, SceneError
from geoseg.io.integrity import publish_text
from geoseg.io.names import gdal_href
from geoseg.io.sources import ITEM_BYTES, ITEM_ID_TAG, ITEM_TAG, PLATFORM_TAG, UPDATED_TAG, BandSource, Stack
from geoseg.textfiles import read_text


def _geojson(path: Path) -> dict | None:
    """The JSON object at ``path`` when its suffix says GeoJSON and it reads as one, else None."""
    if path.suffix.lower() not in (".json", ".geojson"):
        return None
    try:
        data = json.loads(read_text(path, ITEM_BYTES, "a STAC Item"))
    except (ValueError, ConfigError):
        return None
    return data if isinstance(data, dict) else None


def _is_item(data: object) -> bool:
    return isinstance(data, dict) and isinstance(data.get("assets"), dict)


def is_stac_item(path: Path) -> bool:
    """Whether ``path`` is a STAC Item (a GeoJSON Feature with assets), by its suffix and a look inside."""
    data = _geojson(path)
    return data is not None and data.get("type") == "Feature" and _is_item(data)


def is_item_collection(path: Path) -> bool:
    """Whether ``path`` is a STAC ItemCollection or search result: a GeoJSON FeatureCollection of Items."""
    data = _geojson(path)
    return data is not None and data.get("type") == "FeatureCollection" and any(
        _is_item(f) for f in data.get("features", []))


def is_stac_catalog(path: Path) -> bool:
    """Whether ``path`` is a static STAC Catalog or Collection (its Items reached through ``item`` and ``child``
    links)."""
    data = _geojson(path)
    return data is not None and data.get("type") in ("Catalog", "Collection") and isinstance(data.get("links"), list)


#: The most Items and catalogs :func:`catalog_items` walks: a cycle or a runaway catalogue ends there.
MAX_CATALOG_ENTRIES = 1_000_000


def catalog_items(path: Path) -> list[Path]:
    """The Item files of the static catalog at ``path``, in link order, through its ``child`` catalogs (each read
    once); links are files relative to the catalog that names them. A remote link stops with one line."""
    items: list[Path] = []
    seen: set[Path] = set()
    pending = [path.resolve()]
    while pending:
        catalog = pending.pop(0)
        if catalog in seen:
            continue
        seen.add(catalog)
        try:
            data = json.loads(read_text(catalog, ITEM_BYTES, "a STAC catalog"))
        except ValueError as exc:
            raise ConfigError(f"{catalog}: is not JSON ({exc}); check the catalog's links") from None
        for link in data.get("links", []) if isinstance(data, dict) else []:
            rel, href = link.get("rel"), str(link.get("href", ""))
            if rel not in ("item", "child") or not href:
                continue
            if "://" in href and not href.startswith("file://"):
                raise ConfigError(f"{catalog}: links to {href}; geoseg walks local static catalogs only: list the "
                                  f"Items' URLs in a file (one per line) and pass @FILE")
            target = Path(gdal_href(href, catalog.parent))
            if rel == "child":
                pending.append(target)
            elif target not in items:
                items.append(target)
            if len(items) + len(seen) > MAX_CATALOG_ENTRIES:
                raise ConfigError(f"{path}: more than {MAX_CATALOG_ENTRIES:,} Items and catalogs; split the batch")
    return items


def split_collection(path: Path, folder: Path) -> list[Path]:
    """The Items of the collection at ``path``, each written to ``folder`` as ``ID.json`` (relative hrefs made
    absolute against the collection's folder; a file is rewritten only when its Item changed)."""
    data = json.loads(read_text(path, ITEM_BYTES, "a STAC ItemCollection"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot be created for the Items of {path} ({exc.strerror}); check the "
                          f"output folder's permissions") from None
    items = []
    for feature in data.get("features", []):
        if not _is_item(feature):
            continue
        item = json.loads(json.dumps(feature))
        for asset in item["assets"].values():
            href = str(asset.get("href", ""))
            if href and "://" not in href and not Path(href).is_absolute():
                asset["href"] = str((path.parent / href).resolve())
        name = re.sub(r"[^A-Za-z0-9._-]", "_", str(item.get("id") or f"item{len(items)}"))[:200]
        out = folder / f"{name}.json"
        text = json.dumps(item, indent=1)
        if not out.exists() or out.read_text() != text:
            publish_text(out, text)
        items.append(out)
    return items


def item_stack(path: Path) -> Stack:
    """The data assets of the STAC Item at ``path`` as a stack, one band per single-band raster asset."""
    try:
        item = json.loads(read_text(path, ITEM_BYTES, "a STAC Item"))
    except ValueError as exc:
        raise SceneError(f"{path}: not a STAC Item (invalid JSON: {exc}); give the Item's JSON") from None
    sources = []
    for key, asset in item.get("assets", {}).items():
        media = str(asset.get("type", ""))
        roles = asset.get("roles") or ["data"]
        if "data" not in roles or not ("tiff" in media or "jp2" in media or not media):
            continue
        bands = asset.get("eo:bands") or asset.get("bands") or [{}]
        if len(bands) != 1:
            continue  # a multi-band asset (a visual RGB) is not one band of the stack
        band = bands[0]
        raster = (asset.get("raster:bands") or [{}])[0] if "raster:bands" in asset else band
        name = band.get("common_name") or band.get("eo:common_name") or band.get("name") or key
        sources.append(BandSource(gdal_href(str(asset["href"]), path.parent), str(name),
                                  raster.get("scale"), raster.get("offset"), raster.get("nodata")))
    if not sources:
        raise SceneError(f"{path}: the STAC Item has no single-band raster data assets to segment")
    props = item.get("properties", {})
    tags = {ITEM_TAG: str(path.resolve()), ITEM_ID_TAG: str(item.get("id") or path.stem)}
    # when the Item or an asset says it was updated: the stack's text changes with it, so a batch's resume record
    # (the stack's modification time) redoes the scene when a provider republishes an asset at the same href
    updated = sorted({str(v) for v in [props.get("updated"), *(a.get("updated") for a in item.get("assets", {}).values()
                                                             if isinstance(a, dict))] if v})
    if updated:
        tags[UPDATED_TAG] = ",".join(updated)
    if props.get("datetime") or props.get("start_datetime"):
        tags["ACQUISITION_DATETIME"] = str(props.get("datetime") or props.get("start_datetime"))
    if props.get("platform"):
        tags[PLATFORM_TAG] = str(props["platform"])
    return Stack(tuple(sources), str(item.get("id") or path.stem), tags, path.parent)
