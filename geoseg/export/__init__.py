"""Export: what turns a mask into a GIS product: the legend where GDAL and QGIS read it, statistics,
vector layers and STAC metadata. Everything here works on finished masks too (``geoseg export``)."""
