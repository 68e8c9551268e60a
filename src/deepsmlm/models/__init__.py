"""Networks: Deep-STORM (2D) and, later, DeepSTORM3D and a fast localizer."""
