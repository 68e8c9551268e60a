"""Training: a small fit() loop, the training of any registered method, the model folder."""
