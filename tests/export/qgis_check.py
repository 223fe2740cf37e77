"""Run by the system python with QGIS (python3-qgis), headless: what QGIS itself makes of a geoseg product.

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/export/qgis_check.py MASK.tif LAYER.gpkg OUT.png

Loads the mask (QGIS applies MASK.qml as its default style) and the polygon layer, renders the styled
mask to OUT.png, and prints one JSON line of what it found. It leaves with os._exit: QGIS 3.22 can
crash while shutting down (../shared/tools/GIS-CLIENTS.md), after the results are written.
"""

import json
import os
import sys

from qgis.core import (
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor

mask_path, vector_path, png_path = sys.argv[1:4]
app = QgsApplication([], False)
app.initQgis()
found = {}
mask = QgsRasterLayer(mask_path, "mask")
found["mask_valid"] = mask.isValid()
found["style_loaded"] = mask.loadDefaultStyle()[1]
renderer = mask.renderer()
found["renderer"] = renderer.type()
found["classes"] = [{"value": c.value, "label": c.label, "color": c.color.name()} for c in renderer.classes()]
found["crs"] = mask.crs().authid()
extent = mask.extent()
found["extent"] = [extent.xMinimum(), extent.yMinimum(), extent.xMaximum(), extent.yMaximum()]
found["size"] = [mask.width(), mask.height()]

layer = QgsVectorLayer(vector_path, "polygons", "ogr")
found["vector_valid"] = layer.isValid()
found["vector_crs"] = layer.crs().authid()
found["vector_fields"] = [f.name() for f in layer.fields()]
found["vector_count"] = layer.featureCount()
found["vector_names"] = sorted({f["name"] for f in layer.getFeatures()})

settings = QgsMapSettings()
settings.setLayers([mask])
settings.setDestinationCrs(mask.crs())
settings.setExtent(extent)
settings.setOutputSize(QSize(mask.width(), mask.height()))
settings.setBackgroundColor(QColor(0, 0, 0, 0))
job = QgsMapRendererParallelJob(settings)
job.start()
job.waitForFinished()
image = job.renderedImage()
found["png_saved"] = image.save(png_path, "png")
found["png_size"] = [image.width(), image.height()]
print(json.dumps(found), flush=True)
os._exit(0)
