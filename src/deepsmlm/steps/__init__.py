"""The file-level steps: what each command runs (``cli`` parses and calls one of them).

One module per command — simulate, psf, calibrate, train, localize, estimate, evaluate, render,
crlb, frc, design, demo — with their shared helpers in ``common``. A step reads files,
validates the experiment (with ``build``, the only code that reads the config tree),
computes through components that take objects, and writes every file atomically.
``deepsmlm.api`` re-exports them as the plain-Python API.
"""
