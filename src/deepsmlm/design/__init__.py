"""Design of the microscope's phase mask (DESIGN §4–§6).

- ``phase_models``: the mask as learnable parameters (pixel map or Zernike coefficients)
  and the regularisers a manufacturer needs.
- ``fisher``: the mean CRLB of a mask over the z range, differentiable in the mask, and
  the Fisher-information designer (Shechtman et al., PRL 113, 133902 (2014)).
- ``end_to_end``: the mask and a localization CNN optimised together through the
  differentiable simulation (Nehme et al., Nat. Methods 17, 734 (2020), Fig. 4).
- ``outputs``: mask.npy + mask.json, the SLM TIFF, mask.png and psf.png.
"""
