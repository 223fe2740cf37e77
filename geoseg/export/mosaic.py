"""A VRT mosaic of masks: one layer over a batch's output folder that GDAL and QGIS open like a raster.

:func:`write_vrt` lists masks on one grid (same CRS, same pixel size, north up) as sources of a
single-band VRT with the masks' colour table, class names and nodata, each placed at its offset.
Masks on another grid than the first are left out, with a note: a VRT cannot reproject them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from xml.sax.saxutils import escape

import rasterio


def write_vrt(masks: list[Path], output: Path) -> tuple[list[Path], list[str]]:
    """Write the mosaic of ``masks`` to ``output`` (atomically); return the masks in it and notes."""
    grids = []
    for path in masks:
        with rasterio.open(path) as ds:
            grids.append((path, ds.crs, ds.transform, ds.width, ds.height, ds.colormap(1), ds.tags().get("CLASSES")))
    if not grids:
        return [], []
    _, crs, first, *_ = grids[0]
    used, notes = [], []
    for g in grids:
        path, g_crs, t = g[0], g[1], g[2]
        if g_crs != crs or (t.a, t.e, t.b, t.d) != (first.a, first.e, first.b, first.d):
            notes.append(f"{path}: not on the grid of {grids[0][0].name} (CRS or pixel size differ); left out of "
                         f"{output.name}")
        else:
            used.append(g)
    x0 = min(t.c for _, _, t, *_ in used)
    y0 = max(t.f for _, _, t, *_ in used)
    x1 = max(t.c + w * t.a for _, _, t, w, _h, *_ in used)
    y1 = min(t.f + h * t.e for _, _, t, _w, h, *_ in used)
    width, height = round((x1 - x0) / first.a), round((y1 - y0) / first.e)
    cmap, classes = used[0][5], used[0][6]
    # One entry per class: a VRT's colour table is as long as it says (a TIFF's palette is always 256 long, so a
    # client with neither the .qml nor the .aux.xml beside a mask lists 256 entries; the mosaic lists the classes).
    count = len(json.loads(classes)) if classes else 1 + max((v for v, c in cmap.items() if v != 255 and c[3]),
                                                              default=0)
    entries = "".join(f'      <Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>\n'
                      for r, g, b, a in (cmap.get(v, (0, 0, 0, 0)) for v in range(count)))
    names = "".join(f"      <Category>{escape(n)}</Category>\n" for n in json.loads(classes)) if classes else ""
    sources = ""
    for path, _, t, w, h, *_ in used:
        col, row = (t.c - x0) / first.a, (t.f - y0) / first.e
        sources += ("    <ComplexSource>\n"
                    f'      <SourceFilename relativeToVRT="1">{escape(os.path.relpath(path, output.parent))}'
                    "</SourceFilename>\n      <SourceBand>1</SourceBand>\n"
                    f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>\n'
                    f'      <DstRect xOff="{col:g}" yOff="{row:g}" xSize="{w}" ySize="{h}"/>\n'
                    "      <NODATA>255</NODATA>\n    </ComplexSource>\n")
    srs = f"  <SRS>{escape(crs.to_wkt())}</SRS>\n" if crs is not None else ""
    # The product tag: a batch over this folder knows the mosaic for geoseg's own, not a scene.
    text = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n{srs}'
            '  <Metadata>\n    <MDI key="GEOSEG_PRODUCT">mosaic</MDI>\n  </Metadata>\n'
            f"  <GeoTransform>{x0!r}, {first.a!r}, 0.0, {y0!r}, 0.0, {first.e!r}</GeoTransform>\n"
            '  <VRTRasterBand dataType="Byte" band="1">\n    <NoDataValue>255</NoDataValue>\n'
            f"    <ColorInterp>Palette</ColorInterp>\n    <ColorTable>\n{entries}    </ColorTable>\n"
            + (f"    <CategoryNames>\n{names}    </CategoryNames>\n" if names else "")
            + sources + "  </VRTRasterBand>\n</VRTDataset>\n")
    partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
    partial.write_text(text)
    os.replace(partial, output)
    return [g[0] for g in used], notes
