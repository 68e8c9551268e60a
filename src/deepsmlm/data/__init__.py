"""Training targets and on-the-fly simulated datasets."""
