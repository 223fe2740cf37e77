"""Files: scenes read window by window, masks written atomically, and the resume record in each mask.

Importing it applies geoseg's GDAL settings for untrusted inputs (:mod:`geoseg.io.gdal_env`)."""

from geoseg.io.gdal_env import apply_defaults

apply_defaults()
