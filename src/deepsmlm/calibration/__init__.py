"""Calibration from measurements: a raw movie's camera and scene (``movie``)."""
