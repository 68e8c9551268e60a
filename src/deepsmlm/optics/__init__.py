"""Image formation: Zernike polynomials, the pupil, phase masks and PSF models."""
