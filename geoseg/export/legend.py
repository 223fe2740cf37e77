"""The legend beside a mask, where GIS clients look for it.

* :func:`write_pam`: GDAL's ``MASK.tif.aux.xml`` with the class names as *category names* and a
  *raster attribute table* (value, name, colour, pixel count). GeoTIFF keeps neither inside the file;
  GDAL reads them from this sidecar (``gdalinfo`` lists "Categories"), and so does everything built on
  GDAL.
* :func:`write_qml`: a QGIS layer style ``MASK.qml``: the paletted renderer with the model's
  colours and class names as labels, nearest-neighbour resampling. QGIS loads a ``.qml`` with the same
  name as the raster as the layer's default style.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import rasterio

from geoseg.models.card import ClassInfo

#: GDAL's raster attribute table field types and usages (gdal.h: GDALRATFieldType, GDALRATFieldUsage).
_INTEGER, _STRING = 0, 2
_PIXEL_COUNT, _NAME, _MIN_MAX, _RED, _GREEN, _BLUE = 1, 2, 5, 6, 7, 8


def write_pam(path: Path, classes: tuple[ClassInfo, ...], counts: np.ndarray | None = None) -> None:
    """GDAL's PAM sidecar for band 1 of a class mask: category names and an attribute table."""
    names = {c.value: c.name for c in classes}
    categories = "".join(f"      <Category>{_text(names.get(v, ''))}</Category>\n"
                         for v in range(max(names) + 1))
    fields = [("value", _INTEGER, _MIN_MAX), ("class", _STRING, _NAME), ("red", _INTEGER, _RED),
              ("green", _INTEGER, _GREEN), ("blue", _INTEGER, _BLUE)]
    if counts is not None:
        fields.append(("count", _INTEGER, _PIXEL_COUNT))
    defs = "".join(f'      <FieldDefn index="{i}"><Name>{n}</Name><Type>{t}</Type><Usage>{u}</Usage></FieldDefn>\n'
                   for i, (n, t, u) in enumerate(fields))
    rows = ""
    for i, c in enumerate(classes):
        cells = [c.value, _text(c.name), *c.color] + ([int(counts[c.value])] if counts is not None else [])
        rows += f'      <Row index="{i}">' + "".join(f"<F>{v}</F>" for v in cells) + "</Row>\n"
    path.write_text(
        "<PAMDataset>\n"
        '  <PAMRasterBand band="1">\n'
        f"    <CategoryNames>\n{categories}    </CategoryNames>\n"
        '    <GDALRasterAttributeTable tableType="thematic">\n'
        f"{defs}{rows}"
        "    </GDALRasterAttributeTable>\n"
        "  </PAMRasterBand>\n"
        "</PAMDataset>\n")


def write_qml(path: Path, classes: tuple[ClassInfo, ...]) -> None:
    """A QGIS style: paletted renderer, the class colours and names, nearest-neighbour resampling."""
    entries = "".join(f'        <paletteEntry value="{c.value}" color="#{_hex(c.color)}" alpha="255" '
                      f"label={quoteattr(c.name)}/>\n" for c in classes)
    path.write_text(
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.22.0" styleCategories="AllStyleCategories">\n'
        "  <pipe>\n"
        "    <provider>\n"
        '      <resampling enabled="false" zoomedInResamplingMethod="nearestNeighbour" '
        'zoomedOutResamplingMethod="nearestNeighbour" maxOversampling="2"/>\n'
        "    </provider>\n"
        '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">\n'
        "      <rasterTransparency/>\n"
        f"      <colorPalette>\n{entries}      </colorPalette>\n"
        "    </rasterrenderer>\n"
        '    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>\n'
        '    <huesaturation saturation="0" grayscaleMode="0" colorizeOn="0"/>\n'
        '    <rasterresampler maxOversampling="2"/>\n'
        "  </pipe>\n"
        "  <blendMode>0</blendMode>\n"
        "</qgis>\n")


def write_points_qml(path: Path, classes: tuple[ClassInfo, ...], field: str) -> None:
    """A QGIS style for a point layer: one circle colour per class of ``field`` (a sample to label)."""
    categories = "".join(f'      <category value="{c.value}" symbol="{i}" label={quoteattr(c.name)} render="true"/>\n'
                         for i, c in enumerate(classes))
    symbols = "".join(
        f'      <symbol type="marker" name="{i}" alpha="1" clip_to_extent="1" force_rhr="0">\n'
        '        <layer class="SimpleMarker" enabled="1" pass="0" locked="0">\n          <Option type="Map">\n'
        f'            <Option type="QString" name="color" value="{",".join(str(int(v)) for v in c.color[:3])},255"/>\n'
        '            <Option type="QString" name="name" value="circle"/>\n'
        '            <Option type="QString" name="size" value="3"/>\n'
        '            <Option type="QString" name="outline_color" value="35,35,35,255"/>\n'
        "          </Option>\n        </layer>\n      </symbol>\n" for i, c in enumerate(classes))
    path.write_text(
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.22.0" styleCategories="Symbology">\n'
        f'  <renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} symbollevels="0" enableorderby="0" '
        'forceraster="0">\n'
        f"    <categories>\n{categories}    </categories>\n"
        f"    <symbols>\n{symbols}    </symbols>\n"
        "  </renderer-v2>\n</qgis>\n")


def hex_color(color: tuple[int, int, int]) -> str:
    """``RRGGBB`` (upper case, no ``#``), as STAC's ``color_hint`` and QGIS write it."""
    return _hex(color)


def _hex(color: tuple[int, int, int]) -> str:
    return "".join(f"{int(v):02X}" for v in color[:3])


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def read_legend(ds: rasterio.io.DatasetReader) -> tuple[ClassInfo, ...]:
    """The classes of a mask geoseg wrote (``CLASSES`` tag and colour table); for another single-band
    class raster, one class per colour-table entry (or per value 0..254) named by its value."""
    import json

    tags = ds.tags()
    try:
        cmap = ds.colormap(1)
    except ValueError:  # no colour table
        cmap = {}
    if "CLASSES" in tags:
        names = json.loads(tags["CLASSES"])
        return tuple(ClassInfo(v, str(n), tuple(cmap.get(v, (128, 128, 128, 255))[:3])) for v, n in enumerate(names))
    nodata = ds.nodata
    values = sorted(v for v in cmap if v != nodata) if cmap else [v for v in range(255) if v != nodata]
    return tuple(ClassInfo(v, f"class {v}", tuple(cmap.get(v, (128, 128, 128, 255))[:3])) for v in values)
