"""The experiment file: a typed, validated description of microscope, camera, scene.

Every key is checked on load: unknown keys and impossible values are errors that name the
key and the allowed range. Lengths are in nm, phases in radians, photons at the sample.

>>> exp = Experiment.model_validate({"frame": {"height_px": 32, "width_px": 32}})
>>> exp.optics.wavelength_nm
680.0
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import Field, ValidationError, model_validator

from deepsmlm import methods
from deepsmlm.errors import UserError
from deepsmlm.schema import NonNegFloat, PosFloat
from deepsmlm.schema import Strict as _Strict
from deepsmlm.schema import check_range as _check_range

# The training section: one per registered method, chosen by its `model` key.
Training = Annotated[Union[methods.sections()], Field(discriminator="model")]  # noqa: UP007


# ---------------------------------------------------------------- optics
class ClearMask(_Strict):
    kind: Literal["clear"] = "clear"


class ZernikeMask(_Strict):
    """Phase mask as a sum of Zernike modes; amplitudes in rad RMS, Noll indices."""

    kind: Literal["zernike"]
    noll: dict[Annotated[int, Field(ge=1, le=231)], float] = Field(default_factory=dict)


class FileMask(_Strict):
    """Phase mask [rad] loaded from .npy, .mat or .tif.

    ``pupil_radius_px`` is the radius, in the file's own pixels, that corresponds to the
    pupil edge NA_eff/λ. When omitted it is estimated from the mask's non-zero support.
    Relative paths are resolved against the experiment file's folder.
    ``transpose``, ``flip_x``, ``flip_y`` re-orient the file (applied in that order) for a
    microscope that mirrors or turns the image relative to the file's convention
    (docs/conventions.md, "Fourier sign and mask orientation").
    ``amplitude_path`` (.npy, same grid, orientation and radius as the phase) is a pupil
    transmission, 1 = uniform, as ``deepsmlm calibrate`` retrieves it.
    """

    kind: Literal["file"]
    path: str
    key: str | None = None
    amplitude_path: str | None = None
    pupil_radius_px: PosFloat | None = None
    flip_x: bool = False
    flip_y: bool = False
    transpose: bool = False


Mask = Annotated[ClearMask | ZernikeMask | FileMask, Field(discriminator="kind")]


class Aberrations(_Strict):
    noll: dict[Annotated[int, Field(ge=1, le=231)], float] = Field(default_factory=dict)


class Astigmatism(_Strict):
    """Elliptical-Gaussian PSF: sigma_x,y(z) = sigma0·sqrt(1 + ((z - focus ∓ c)/d)²)."""

    focal_offset_nm: NonNegFloat = 400.0
    depth_of_focus_nm: PosFloat = 500.0


class Optics(_Strict):
    wavelength_nm: Annotated[float, Field(gt=200, lt=2000)] = 680.0
    na: Annotated[float, Field(gt=0, le=1.7)] = 1.45
    n_immersion: Annotated[float, Field(ge=1.0, le=2.0)] = 1.518
    n_sample: Annotated[float, Field(ge=1.0, le=2.0)] = 1.33
    pixel_size_nm: Annotated[float, Field(gt=0, le=10000)] = 100.0
    focus_nm: float = 0.0
    # pupil: scalar Fourier optics (DESIGN §4.1); vectorial: the same pupil with the
    # vectorial high-NA factors of a freely rotating dipole (Fresnel, apodisation; ≈ 5× cost)
    psf: Literal["pupil", "vectorial", "gaussian", "astigmatic-gaussian"] = "pupil"
    mask: Mask = Field(default_factory=ClearMask)
    aberrations: Aberrations = Field(default_factory=Aberrations)
    gaussian_sigma_nm: PosFloat | None = None
    astigmatism: Astigmatism = Field(default_factory=Astigmatism)
    pixel_oversampling: Annotated[int, Field(ge=1, le=16)] = 1
    pupil_grid_px: Annotated[int, Field(ge=16, le=1024)] = 64
    patch_px: Annotated[int, Field(ge=3, le=512)] | None = None
    supercritical: bool = False
    # multicolor (emitters.species): the mask and the aberrations are phases at
    # wavelength_nm (the design wavelength); at another emission wavelength λ a thin
    # element gives phase × (λ_design/λ) × (n(λ) − 1)/(n(λ_design) − 1), with n ≡ const for
    # "none" and the Sellmeier index of fused silica for "fused-silica" (optics/multicolor.py)
    mask_dispersion: Literal["none", "fused-silica"] = "none"

    @model_validator(mode="after")
    def _physics(self) -> Optics:
        if self.na >= self.n_immersion:
            raise ValueError(
                f"optics.na must be < optics.n_immersion ({self.n_immersion}), got {self.na}"
            )
        return self

    @property
    def na_eff(self) -> float:
        """Pupil cut-off NA: min(NA, n_sample) unless supercritical light is kept."""
        return self.na if self.supercritical else min(self.na, self.n_sample)

    @property
    def sigma_nm(self) -> float:
        """Gaussian PSF sigma: given, or the Gaussian matched to the Airy core (0.21 λ/NA)."""
        if self.gaussian_sigma_nm is not None:
            return self.gaussian_sigma_nm
        return 0.21 * self.wavelength_nm / self.na


# ---------------------------------------------------------------- camera
CAMERA_PRESETS: dict[str, dict[str, float]] = {
    "ideal": dict(qe=1.0, em_gain=1.0, read_noise_e=0.0, spurious_charge=0.0,
                  e_per_adu=1.0, baseline_adu=0.0, bit_depth=16),
    # SMLM Challenge 2016 EMCCD (Sage et al., Nat. Methods 2019).
    "emccd-smlm2016": dict(qe=0.9, em_gain=300.0, read_noise_e=74.4, spurious_charge=0.002,
                           e_per_adu=45.0, baseline_adu=100.0, bit_depth=16),
    # A typical back-illuminated sCMOS (uniform pixels).
    "scmos": dict(qe=0.8, em_gain=1.0, read_noise_e=1.6, spurious_charge=0.0,
                  e_per_adu=0.46, baseline_adu=100.0, bit_depth=16),
}


class CameraConfig(_Strict):
    """Camera: a preset, with any explicit value overriding it."""

    preset: Literal["ideal", "emccd-smlm2016", "scmos"] | None = "ideal"
    qe: Annotated[float, Field(gt=0, le=1)] | None = None
    em_gain: Annotated[float, Field(ge=1, le=10000)] | None = None
    read_noise_e: NonNegFloat | None = None
    spurious_charge: NonNegFloat | None = None
    e_per_adu: PosFloat | None = None
    baseline_adu: NonNegFloat | None = None
    # ≤ 16: movies are uint16 ImageJ TIFFs (sCMOS and EMCCD cameras digitise to 11–16 bits)
    bit_depth: Annotated[int, Field(ge=8, le=16)] | None = None

    @model_validator(mode="after")
    def _complete(self) -> CameraConfig:
        base = CAMERA_PRESETS[self.preset] if self.preset else {}
        missing = []
        for key in ("qe", "em_gain", "read_noise_e", "spurious_charge", "e_per_adu",
                    "baseline_adu", "bit_depth"):
            if getattr(self, key) is None:
                if key not in base:
                    missing.append(key)
                    continue
                object.__setattr__(self, key, type(base[key])(base[key])
                                   if key != "bit_depth" else int(base[key]))
        if missing:
            raise ValueError(f"camera needs a preset or explicit values for {missing}")
        return self


# ---------------------------------------------------------------- scene
class FrameConfig(_Strict):
    height_px: Annotated[int, Field(ge=4, le=8192)] = 64
    width_px: Annotated[int, Field(ge=4, le=8192)] = 64


class Photons(_Strict):
    """Photons per emitter per frame (at the sample).

    uniform: in [lo, hi]; lognormal: mean and std; exponential: mean; constant: mean.
    """

    distribution: Literal["uniform", "lognormal", "exponential", "constant"] = "uniform"
    lo: PosFloat = 1000.0
    hi: PosFloat = 5000.0
    mean: PosFloat = 2000.0
    std: NonNegFloat = 500.0

    @model_validator(mode="after")
    def _order(self) -> Photons:
        _check_range((self.lo, self.hi), "emitters.photons.[lo, hi]")
        return self


class Blinking(_Strict):
    """Two-state blinking of a pool of fluorophores (Markov chain over frames).

    Each fluorophore stays on for a geometric number of frames with mean ``mean_on_frames``
    and is on a fraction ``duty_cycle`` of the time; the pool is sized so that the mean
    number of active emitters per frame matches the requested density.
    """

    mean_on_frames: Annotated[float, Field(ge=1.0)] = 2.0
    duty_cycle: Annotated[float, Field(gt=0, lt=1)] = 0.05


class Species(_Strict):
    """One dye of a multicolor sample: its emission wavelength (one wavelength per dye,
    the peak of its spectrum), the fraction of emitters it makes up (normalised over the
    species), and optionally its own photon distribution (else ``emitters.photons``)."""

    name: Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.+-]+$")]
    wavelength_nm: Annotated[float, Field(gt=200, lt=2000)]
    fraction: PosFloat = 1.0
    photons: Photons | None = None


class EmittersConfig(_Strict):
    structure: Literal["uniform", "filaments", "ellipsoid"] = "uniform"
    density_per_um2: Annotated[float, Field(gt=0, le=100)] | None = None
    n_per_frame: tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]] | None = None
    z_range_nm: tuple[float, float] = (0.0, 0.0)
    photons: Photons = Field(default_factory=Photons)
    blinking: Blinking | None = None
    n_filaments: Annotated[int, Field(ge=1, le=1000)] = 6
    filament_persistence_nm: PosFloat = 3000.0
    blur_sigma_nm: NonNegFloat = 0.0
    # multicolor: 1–8 species, each emitter drawn from them by fraction (the truth table's
    # `species` column is the index into this list)
    species: Annotated[list[Species], Field(min_length=1, max_length=8)] | None = None

    @model_validator(mode="after")
    def _count(self) -> EmittersConfig:
        if self.species is not None:
            names = [sp.name for sp in self.species]
            if len(set(names)) != len(names):
                raise ValueError(f"emitters.species: names must differ, got {names}")
        if (self.density_per_um2 is None) == (self.n_per_frame is None):
            if self.density_per_um2 is None:
                self.__dict__["density_per_um2"] = 1.0
            else:
                raise ValueError("emitters: give either density_per_um2 or n_per_frame, not both")
        if self.n_per_frame is not None:
            _check_range(self.n_per_frame, "emitters.n_per_frame")
            if self.blinking is not None:
                raise ValueError("emitters.blinking needs density_per_um2, not n_per_frame")
        _check_range(self.z_range_nm, "emitters.z_range_nm")
        return self


class BackgroundConfig(_Strict):
    """constant: one level per frame drawn in [lo, hi]; nonuniform: a smooth field in [lo, hi]."""

    kind: Literal["constant", "nonuniform"] = "constant"
    photons_per_px: tuple[NonNegFloat, NonNegFloat] = (10.0, 10.0)
    length_scale_nm: PosFloat = 2000.0

    @model_validator(mode="after")
    def _order(self) -> BackgroundConfig:
        _check_range(self.photons_per_px, "background.photons_per_px")
        return self


class DesignConfig(_Strict):
    """How ``deepsmlm design`` learns a phase mask (DESIGN §4–§6).

    End to end (the default objective): the mask and a DeepSTORM3D network (``training``
    section) are optimised together; ``mask_learning_rate`` is the mask's own Adam rate
    [rad per step]. ``crlb``: Zernike coefficients minimise the mean CRLB of x, y, z over
    ``crlb_z_samples`` depths in emitters.z_range_nm, for one emitter of ``crlb_photons``
    on ``crlb_background_per_px`` (default: the middle of the experiment's ranges).
    Regularisers: ``smoothness_weight`` × mean squared wrapped phase step between pupil
    pixels; ``range_weight`` × (peak-to-valley − ``phase_range_rad``)² when a range is set;
    ``quantisation_weight`` × mean sin²(L·φ/2) for a mask printed with ``height_levels`` = L
    etch depths (zero at the L phases 2πk/L; the design also writes the mask quantised to
    those levels and reports its CRLB).

    The footprint term of the CRLB objective: ``footprint_weight`` [nm of mean CRLB per µm]
    × the mean over z of the photon-weighted distance beyond ``footprint_radius_nm`` from the
    PSF's centroid — what keeps a Fisher design compact enough for dense samples (the CRLB
    of one emitter alone rewards a PSF spread over microns). ``joint_footprint_weight``
    adds the same term [per µm] to the end-to-end loss (the network's loss does not count
    faint rings against a PSF).

    The colour term (multicolor experiments): ``joint_colour_weight`` × the colour
    objective of the CRLB design (mean over species and z of σ_λ/Δλ, the Cramér–Rao bound of
    the emission wavelength over the gap to the nearest other species, with the lateral
    CRLB kept within 1.5× the clear aperture's) added to the end-to-end loss, so that the
    joint design keeps the colour information that the network, early on, cannot yet read.

    ``crlb_zernike_noll``: the Zernike modes of the Fisher design (``--objective crlb``, and
    the Fisher stage of ``start: crlb``) when they differ from ``zernike_noll``.

    From scratch (``start: crlb``, end to end): the Fisher design above runs first (Zernike
    from a clear aperture, seconds to minutes), the network then trains alone on that mask
    for ``warmup_minutes`` (so the mask's gradient carries information when it joins),
    then mask (``parameterization``, pixels by default) and network learn together for the
    rest of the time budget.
    """

    parameterization: Literal["pixels", "zernike"] = "pixels"
    start: Literal["clear", "experiment", "crlb"] = "clear"
    zernike_noll: tuple[Annotated[int, Field(ge=1, le=231)],
                        Annotated[int, Field(ge=1, le=231)]] = (5, 28)
    crlb_zernike_noll: tuple[Annotated[int, Field(ge=1, le=231)],
                             Annotated[int, Field(ge=1, le=231)]] | None = None
    mask_learning_rate: PosFloat = 0.01
    smoothness_weight: NonNegFloat = 0.0
    phase_range_rad: PosFloat | None = None
    range_weight: NonNegFloat = 1.0
    crlb_photons: PosFloat | None = None
    crlb_background_per_px: NonNegFloat | None = None
    crlb_z_samples: Annotated[int, Field(ge=2, le=1000)] = 21
    crlb_steps: Annotated[int, Field(ge=1)] = 300
    crlb_learning_rate: PosFloat = 0.05
    footprint_weight: NonNegFloat = 0.0
    footprint_radius_nm: PosFloat = 800.0
    joint_footprint_weight: NonNegFloat = 0.0
    joint_colour_weight: NonNegFloat = 0.0
    warmup_minutes: NonNegFloat = 0.0
    height_levels: Annotated[int, Field(ge=2, le=256)] | None = None
    quantisation_weight: NonNegFloat = 0.0

    @model_validator(mode="after")
    def _check(self) -> DesignConfig:
        _check_range(self.zernike_noll, "design.zernike_noll")
        if self.crlb_zernike_noll is not None:
            _check_range(self.crlb_zernike_noll, "design.crlb_zernike_noll")
        if self.quantisation_weight > 0 and self.height_levels is None:
            raise ValueError("design.quantisation_weight needs design.height_levels (the "
                             "number of etch depths of the printed mask)")
        return self


class Experiment(_Strict):
    optics: Optics = Field(default_factory=Optics)
    camera: CameraConfig = Field(default_factory=CameraConfig)
    frame: FrameConfig = Field(default_factory=FrameConfig)
    emitters: EmittersConfig = Field(default_factory=EmittersConfig)
    background: BackgroundConfig = Field(default_factory=BackgroundConfig)
    training: Training = Field(default_factory=lambda: methods.get(methods.DEFAULT).section(
        model=methods.DEFAULT))
    design: DesignConfig = Field(default_factory=DesignConfig)

    @model_validator(mode="before")
    @classmethod
    def _method_tag(cls, data):
        """``training.model`` defaults to ``methods.DEFAULT`` (fastloc) — or to the method
        whose section holds a key the default's does not (files written when Deep-STORM
        was the default set its keys without naming it); keys of another method are
        dropped when they hold that method's default (files written before each method had
        its own section listed every key), and otherwise named as that method's by the
        error."""
        if isinstance(data, dict) and isinstance(data.get("training"), dict):
            t = dict(data["training"])
            if "model" not in t:
                t["model"] = _implied_method(t)
            if t["model"] in methods.names():
                own = methods.get(t["model"]).section.model_fields
                for key in [k for k in t if k not in own]:
                    owner = _owner_of(key)
                    if owner is not None and _is_default(owner, key, t[key]):
                        del t[key]
            data = {**data, "training": t}
        return data

    def to_dict(self) -> dict:
        """Fully expanded, JSON/YAML-ready dictionary (presets resolved)."""
        return self.model_dump(mode="json")

    def save(self, path: str | os.PathLike) -> None:
        """Write the fully expanded experiment as YAML (atomically)."""
        import yaml

        from deepsmlm.io.atomic import atomic_write_text

        atomic_write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _implied_method(training: dict) -> str:
    """The method of a training section that names none: the default, unless a key belongs
    to another method's section and not to the default's."""
    own = methods.get(methods.DEFAULT).section.model_fields
    owners = (_owner_of(key) for key in training if key not in own)
    return next((o for o in owners if o is not None), methods.DEFAULT)


def _owner_of(key: str) -> str | None:
    """The method whose training section has ``key`` (the first one), or None."""
    return next((n for n in methods.names() if key in methods.get(n).section.model_fields),
                None)


def _is_default(method: str, key: str, value) -> bool:
    import json

    default = methods.get(method).section.model_fields[key].default
    def as_json(v):
        return (json.dumps(list(v) if isinstance(v, tuple) else v, sort_keys=True))
    try:
        return as_json(value) == as_json(default)
    except TypeError:
        return False


# ---------------------------------------------------------------- loading
def _format_error(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        raw = [str(p) if str(p).isprintable() and str(p).strip() == str(p) and str(p)
               else repr(str(p)) for p in e["loc"] if not str(p).startswith("function-after")]
        if len(raw) > 1 and raw[0] == "training" and raw[1] in methods.names():
            method, raw = raw[1], [raw[0], *raw[2:]]  # drop the union's tag from the path
        else:
            method = None
        loc = ".".join(raw)
        msg = " ".join(e["msg"].removeprefix("Value error, ").split())
        if e["type"] == "extra_forbidden":
            owners = [n for n in methods.names() if method and n != method
                      and raw[-1] in methods.get(n).section.model_fields]
            msg = (f"a key of {' and '.join(repr(o) for o in owners)}, not of "
                   f"{method!r} (training.model)" if owners else "unknown key")
        elif e["type"] == "union_tag_invalid":
            msg = f"unknown kind; allowed: {e.get('ctx', {}).get('expected_tags', '')}"
        parts.append(f"{loc}: {msg}" if loc and not msg.startswith(loc) else msg)
    return f"{source}: " + "; ".join(parts)


def experiment_from_dict(data: dict, source: str = "experiment", base_dir: Path | None = None
                         ) -> Experiment:
    """Validate a dictionary; relative mask paths are resolved against ``base_dir``."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    try:
        exp = Experiment.model_validate(data)
    except ValidationError as err:
        raise UserError(_format_error(err, source)) from None
    mask = exp.optics.mask
    if isinstance(mask, FileMask):
        mask.path = _resolve(mask.path, base_dir)
        if mask.amplitude_path is not None:
            mask.amplitude_path = _resolve(mask.amplitude_path, base_dir)
    return exp


def _resolve(path: str, base_dir: Path | None) -> str:
    """``path`` with ~ and $VARS expanded, relative to ``base_dir`` (symlinks not resolved)."""
    p = Path(os.path.expandvars(os.path.expanduser(path)))
    if not p.is_absolute() and base_dir is not None:
        p = Path(os.path.abspath(base_dir / p))
    return str(p)


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Read and validate an experiment YAML file."""
    import yaml

    from deepsmlm.io.text import read_text

    path = Path(path)
    text = read_text(path, "experiment file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    except RecursionError:
        raise UserError(f"{path}: not valid YAML (nested too deeply)") from None
    if data is None or data == {}:  # never simulate or train on hidden defaults
        raise UserError(f"{path}: empty experiment file (no sections); start from an "
                        "example in configs/ or the skeleton of `deepsmlm estimate`")
    return experiment_from_dict(data, source=str(path), base_dir=path.parent)


def save_experiment(exp: Experiment, path: str | os.PathLike) -> None:
    """Write the fully expanded experiment as YAML (atomically)."""
    exp.save(path)
