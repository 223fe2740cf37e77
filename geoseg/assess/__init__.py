"""Accuracy assessment by the good-practice standard: a stratified random sample of the map, labelled by a
person, and the stratified estimators of accuracy and area with confidence intervals (``geoseg assess``)."""
