"""Measurement: matching, metrics, CRLB, FRC (pure functions on arrays and EmitterSets)."""
