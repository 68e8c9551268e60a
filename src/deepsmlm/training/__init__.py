"""Training: a small fit() loop and the Deep-STORM training procedure."""
