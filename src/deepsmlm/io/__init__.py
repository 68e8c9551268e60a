"""Files: frames (TIFF), localization tables (CSV), atomic writes."""
