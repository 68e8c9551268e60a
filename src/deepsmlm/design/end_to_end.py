"""End-to-end design: the phase mask and a DeepSTORM3D network trained together.

Each step samples emitters over the full z range, renders frames through the pupil model
with the *current* mask (``PupilPSF.set_mask_source``) and the camera's Gaussian noise
model, decodes them with the network, and back-propagates the DeepSTORM3D loss into both
(Nehme et al., Nat. Methods 17, 734 (2020)). Mask and network have their own learning
rates; the fit loop, checkpoints, time budget and ``--resume`` are those of training.

Validation frames are fixed emitters and noise seeds, re-rendered with the mask of the
moment at every evaluation (the mask changes, so stored frames would be stale).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from deepsmlm.build import (
    build_camera,
    build_method,
    build_patch_sampler,
    build_psf,
    crlb_operating_point,
    pupil_grid,
)
from deepsmlm.data.datasets import Batch, PatchSampler, to_device
from deepsmlm.data.normalizer import Normalizer
from deepsmlm.design import phase_models
from deepsmlm.errors import UserError
from deepsmlm.io.tensors import load_tensors
from deepsmlm.training.loop import Checkpoints
from deepsmlm.training.model_folder import ModelCard, ModelFolder


class EndToEnd(nn.Module):
    """The learnable parts: ``phase`` (a phase model) and ``net`` (the localization CNN)."""

    def __init__(self, phase: nn.Module, net: nn.Module):
        super().__init__()
        self.phase, self.net = phase, net


class RenderOn:
    """A PSF whose rendering runs on ``device`` (a GPU): emitters go there, images come back
    to the CPU, where backgrounds and noise are drawn with the run's CPU generator (so a
    design draws the same samples on any device). Gradients pass both ways; everything else
    is the wrapped PSF's."""

    def __init__(self, psf, device):
        self.psf = psf.to(device)
        self.device = torch.device(device)

    def __getattr__(self, name):
        return getattr(self.psf, name)

    def render(self, xyz_nm, photons, frame_idx, shape, chunk: int = 2048, species=None):
        d = self.device
        out = self.psf.render(xyz_nm.to(d), photons.to(d), frame_idx.to(d), shape, chunk,
                              None if species is None else species.to(d))
        return out.cpu()


@dataclass
class ValFrames:
    """Fixed emitters and noise for validation, rendered with the current mask on use."""

    sampler: PatchSampler
    n: int
    seed: int

    def __len__(self) -> int:
        return self.n

    def render(self) -> Batch:
        return self.sampler(self.n, torch.Generator().manual_seed(self.seed))


def start_phase(exp) -> torch.Tensor:
    """The starting mask: a clear aperture (also the start of the Fisher stage of
    ``start: crlb``), or the experiment's own mask."""
    from deepsmlm.build import mask_phase

    grid = pupil_grid(exp.optics)
    if exp.design.start in ("clear", "crlb"):
        return torch.zeros(grid.n_px, grid.n_px)
    return mask_phase(exp.optics, grid)


# what the first stages of a design from scratch leave in its folder (a run begun)
STAGES = ("start/mask.npy", "warmup/checkpoint")


def _fisher_start(exp, folder: Path, resume: bool, progress: bool) -> torch.Tensor:
    """Stage 1 of a design from scratch: the Fisher design (Zernike from a clear aperture,
    with its footprint term) into ``folder/start``; a resumed design reads it back."""
    from deepsmlm.design import outputs
    from deepsmlm.io.tensors import write_json

    stage = folder / "start"
    if resume and (stage / "mask.npy").is_file():
        return _read_mask(stage / "mask.npy")
    probe = exp.model_copy(deep=True)
    probe.design = probe.design.model_copy(update={"start": "clear"})
    res = design_crlb(probe, stage, progress=progress)
    phase = res.pop("phase")
    grid = pupil_grid(exp.optics)
    outputs.write_mask(phase, grid, stage, {"objective": "crlb", "stage": "start"})
    write_json(stage / "design.json", {k: v for k, v in res.items() if k != "start_phase"})
    return phase.float()


def _read_mask(path: Path) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.load(path, allow_pickle=False)).float()


def _warm_up(exp, folder: Path, start: torch.Tensor, minutes: float, resume: bool,
             progress: bool, device: str = "cpu") -> Path:
    """Stage 2 of a design from scratch: the network alone, trained on the start mask for
    ``minutes`` (model folder ``folder/warmup``; a resumed design finishes or reuses it)."""
    from deepsmlm.build import with_mask_file
    from deepsmlm.design import outputs
    from deepsmlm.io.tensors import write_json
    from deepsmlm.training.train import train

    stage = folder / "warmup"
    done = stage / "warmup.json"
    if resume and done.is_file():
        return stage
    mask_dir = folder / "start"
    if not (mask_dir / "mask.npy").is_file():
        outputs.write_mask(start, pupil_grid(exp.optics), mask_dir, {"stage": "start"})
    probe = with_mask_file(exp, (mask_dir / "mask.npy").resolve())
    again = resume and Checkpoints(stage).exists()
    t0 = time.perf_counter()
    card = train(probe, stage, max_minutes=minutes, resume=again, progress=progress,
                 device=device)
    write_json(done, {"minutes": (time.perf_counter() - t0) / 60.0,
                      "samples": card.training.get("samples")})
    return stage


def phase_model(exp, start: torch.Tensor | None = None) -> nn.Module:
    """The design's phase model (pixels or Zernike) starting at ``start`` [rad]."""
    d = exp.design
    grid = pupil_grid(exp.optics)
    start = start_phase(exp) if start is None else start
    if d.parameterization == "zernike":  # start + Σ c_j Z_j, c = 0: exactly the start
        noll = tuple(range(d.zernike_noll[0], d.zernike_noll[1] + 1))
        return phase_models.ZernikePhase(grid, noll, offset=start)
    return phase_models.PixelPhase(grid, start)


def regulariser(exp, grid_aperture: torch.Tensor):
    """λ_s·smoothness + λ_r·range excess + λ_q·quantisation of a phase map, or None when
    all are off."""
    d = exp.design
    if d.smoothness_weight == 0 and d.phase_range_rad is None and d.quantisation_weight == 0:
        return None

    def penalty(phase: torch.Tensor) -> torch.Tensor:
        out = d.smoothness_weight * phase_models.smoothness_penalty(phase, grid_aperture)
        if d.phase_range_rad is not None:
            out = out + d.range_weight * phase_models.range_penalty(phase, grid_aperture,
                                                                    d.phase_range_rad)
        if d.quantisation_weight > 0:
            out = out + d.quantisation_weight * phase_models.quantisation_penalty(
                phase, grid_aperture, d.height_levels)
        return out

    return penalty


def footprint_term(weight: float, radius_nm: float, psf, z_nm: torch.Tensor, then=None):
    """penalty(phase) = weight × mean excess distance [µm] beyond ``radius_nm`` of the PSF
    the mask source drives (+ ``then(phase)``)."""
    from deepsmlm.design.fisher import mean_excess_um

    def penalty(phase: torch.Tensor) -> torch.Tensor:
        out = weight * mean_excess_um(psf, z_nm, radius_nm)
        return out if then is None else out + then(phase)

    return penalty


class OnCpu(nn.Module):
    """A phase source (on any device) seen on the CPU, gradients passing back."""

    def __init__(self, source: nn.Module):
        super().__init__()
        self.source = source

    def forward(self) -> torch.Tensor:
        return self.source().cpu()


def colour_term(exp, phase: nn.Module, then=None):
    """penalty(phase) = ``design.joint_colour_weight`` × the colour objective of the CRLB
    design (``_colour_objective``) for the mask ``phase`` drives (+ ``then(phase)``); the
    bound is computed on the CPU whatever device the design runs on."""
    probe, objective = _design_colour_objective(exp)
    probe.set_mask_source(OnCpu(phase))

    def penalty(phase_map: torch.Tensor) -> torch.Tensor:
        out = exp.design.joint_colour_weight * objective()
        return out if then is None else out + then(phase_map)

    return penalty


def colour_objectives_of(exp, phases: list[torch.Tensor]) -> list[float]:
    """The colour objective (``_colour_objective``) of each phase map [rad]."""
    probe, objective = _design_colour_objective(exp)
    out = []
    for phase in phases:
        probe.set_mask_phase(phase.float())
        with torch.no_grad():
            out.append(float(objective()))
    return out


def _design_colour_objective(exp):
    """``_colour_objective`` at the design's operating point and depths."""
    z = torch.linspace(*exp.emitters.z_range_nm, exp.design.crlb_z_samples)
    return _colour_objective(exp, z, *crlb_operating_point(exp))


def check_design_experiment(exp) -> None:
    from deepsmlm import methods

    if exp.optics.psf not in ("pupil", "vectorial"):
        raise UserError("design: optics.psf must be 'pupil' or 'vectorial' (the mask lives "
                        "in the pupil)")
    if exp.design.joint_colour_weight > 0 and len(exp.emitters.species or ()) < 2:
        raise UserError("design.joint_colour_weight: the colour term needs two or more "
                        "emitters.species (a multicolor experiment)")
    method = build_method(exp)
    if not (method.decodes_z(exp.training) or method.classifies_species(exp.training)):
        raise UserError(f"design: the network of training.model {exp.training.model!r} "
                        "neither localizes in z nor tells colours apart; the design needs a "
                        f"3D decoder or a multicolor classifier (one of "
                        f"{', '.join(methods.names())} set up for z or colour)")


def design_end_to_end(exp, out: str | Path, *, max_minutes: float | None = None,
                      resume: bool = False, init_model: str | Path | None = None,
                      progress: bool = True, device: str = "cpu") -> dict:
    """Learn mask + network for the experiment (the one saved in ``out`` when resuming);
    writes ``out`` (experiment.yaml, model.json, checkpoints, curves); returns a summary
    with the learned phase [rad] under ``"phase"`` and the start under ``"start_phase"``.

    ``init_model``: a trained DeepSTORM3D model folder of the same architecture whose
    weights and normalisation start the network (e.g. one trained on the starting mask, so
    the mask's gradient is informative from the first step). ``device``: where the network
    and the PSF's rendering run (``RenderOn``); backgrounds and noise stay on the CPU."""
    from deepsmlm.training.loop import fit
    from deepsmlm.training.train import new_card, new_network

    folder = ModelFolder(out)
    ckpt = Checkpoints(folder.path)
    check_design_experiment(exp)
    method = build_method(exp)
    t, d = exp.training, exp.design
    t_start = time.perf_counter()
    # an unfit --init-model is refused before anything is written
    init = None if init_model is None or resume else _init_card(exp, Path(init_model))
    folder.path.mkdir(parents=True, exist_ok=True)
    if not resume:  # first, so that a run killed in an early stage can be resumed
        folder.write_experiment(exp)
    start = start_phase(exp)
    if d.start == "crlb":  # from scratch: Fisher stage, then the network alone, then both
        start = _fisher_start(exp, folder.path, resume, progress)
    if d.warmup_minutes > 0 and init_model is None and not (resume and ckpt.exists()):
        init_model = _warm_up(exp, folder.path, start, d.warmup_minutes, resume, progress,
                              device)
        init = _init_card(exp, init_model)
        resume = False  # the joint stage starts now, from the warmed-up network
    if max_minutes is not None:  # the stages before count against the budget
        max_minutes = max(max_minutes - (time.perf_counter() - t_start) / 60.0, 0.01)
    gen = torch.Generator().manual_seed(t.seed)
    sampler = build_patch_sampler(exp, differentiable=True)
    psf = sampler.simulator.psf
    dev = torch.device(device)
    if dev.type != "cpu":
        sampler.simulator.psf = RenderOn(psf, dev)
    phase = phase_model(exp, start)
    psf.set_mask_source(phase)
    camera = build_camera(exp)
    if resume:
        card = folder.read_card()
        normalizer = Normalizer.from_dict(card.normalization)
    else:
        if init is not None:
            card = init
            normalizer = Normalizer.from_dict(card.normalization)
        else:
            with torch.no_grad():  # normalise with frames of the starting mask
                probe = sampler(64, torch.Generator().manual_seed(t.seed + 2)).inputs_adu
            normalizer = Normalizer.fit(t.normalization, camera, probe)
            card = new_card(exp, normalizer)
        folder.write_card(card)
    model = EndToEnd(phase, new_network(card, t.seed)).to(dev)
    if init_model is not None and not resume:
        try:
            model.net.load_state_dict(load_tensors(Path(init_model) / "weights.safetensors"))
        except RuntimeError:
            raise UserError(f"--init-model: the weights in {init_model} do not fit the "
                            "network (a design folder is not a model folder)") from None
    criterion = method.loss(t)
    reg = regulariser(exp, psf.aperture)
    if d.joint_footprint_weight > 0:  # the footprint term in the joint loss too
        z_fp = torch.linspace(*exp.emitters.z_range_nm, d.crlb_z_samples)
        reg = footprint_term(d.joint_footprint_weight, d.footprint_radius_nm, psf, z_fp, reg)
    if d.joint_colour_weight > 0:  # the colour-Fisher term in the joint loss (multicolor)
        reg = colour_term(exp, phase, reg)

    def loss_fn(m: EndToEnd, b) -> torch.Tensor:
        if isinstance(b, ValFrames):
            b = b.render()
        loss = criterion(m.net(normalizer(b.inputs_adu).to(dev)), to_device(b.targets, dev))
        return loss if reg is None or not m.training else loss + reg(m.phase())

    n_val = max(1, t.val_frames // t.batch_size)
    val = [ValFrames(sampler, t.batch_size, t.seed + 1000 + i) for i in range(n_val)]
    groups = [{"params": list(model.net.parameters()), "lr": t.learning_rate},
              {"params": list(model.phase.parameters()), "lr": d.mask_learning_rate}]
    t0 = time.perf_counter()
    state = fit(model, loss_fn, lambda g: sampler(t.batch_size, g), val, ckpt,
                lr=t.learning_rate, steps_per_epoch=t.steps_per_epoch, max_epochs=t.max_epochs,
                lr_patience=t.lr_patience_epochs, min_lr=t.min_learning_rate,
                early_stop=t.early_stop_epochs, max_minutes=max_minutes, generator=gen,
                resume=resume, progress=progress, param_groups=groups,
                schedule=t.lr_schedule, checkpoint_every=t.checkpoint_every_steps)
    model.load_state_dict(load_tensors(ckpt.best_path))
    folder.write_curves(state.history)
    summary = {"objective": "end-to-end", "parameterization": d.parameterization,
               "start": d.start, "init_model": card.init_model,
               "epochs": state.epoch, "stopped": state.stopped,
               "seconds": state.seconds, "best_val_loss": state.best_val,
               "session_seconds": time.perf_counter() - t0,
               "samples": sum(h["steps"] for h in state.history) * t.batch_size}
    with torch.no_grad():
        learned = phase().detach().cpu().clone()
    summary["device"] = str(dev)
    return {**summary, "phase": learned, "start_phase": start}


def _init_card(exp, folder: Path) -> ModelCard:
    """The card of a model folder that can start this design's network (its normaliser,
    the design's own network settings)."""
    from deepsmlm.training.train import new_card

    mf = ModelFolder(folder)
    if not mf.card_path.is_file() or not mf.weights_path.is_file():
        raise UserError(f"--init-model: {folder} is not a model folder (model.json + weights)")
    theirs = mf.read_card()
    mine = new_card(exp, Normalizer.from_dict(theirs.normalization))
    a = {"method": theirs.method, "upsampling": theirs.upsampling, **theirs.settings}
    b = {"method": mine.method, "upsampling": mine.upsampling, **mine.settings}
    diff = [k for k in b if a.get(k) != b.get(k)]
    if diff:
        raise UserError(f"--init-model: {folder} differs from the design's network in "
                        + ", ".join(f"{k} ({a.get(k)} vs {b.get(k)})" for k in diff))
    mine.init_model = str(folder)
    return mine


def design_crlb(exp, out: str | Path, *, max_minutes: float | None = None,
                progress: bool = True) -> dict:
    """Fisher-information design over Zernike coefficients (``design.crlb_zernike_noll``,
    or else ``zernike_noll``), added to the starting mask (``coefficients_rad`` in the
    result are that correction)."""
    from deepsmlm.design.fisher import design_by_crlb

    if exp.optics.psf not in ("pupil", "vectorial"):
        raise UserError("design: optics.psf must be 'pupil' or 'vectorial' (the mask lives "
                        "in the pupil)")
    d = exp.design
    out = Path(out)
    psf = build_psf(exp)
    grid = pupil_grid(exp.optics)
    start = start_phase(exp)
    lo, hi = d.crlb_zernike_noll or d.zernike_noll
    noll = tuple(range(lo, hi + 1))
    coeffs = torch.zeros(len(noll))
    if exp.design.start in ("clear", "crlb"):  # a clear aperture is a saddle of the objective
        g = torch.Generator().manual_seed(exp.training.seed)
        coeffs = 0.01 * torch.randn(len(noll), generator=g)
    phase = phase_models.ZernikePhase(grid, noll, coeffs, offset=start)
    z_lo, z_hi = exp.emitters.z_range_nm
    z = torch.linspace(z_lo, z_hi, d.crlb_z_samples)
    photons, background = crlb_operating_point(exp)
    out.mkdir(parents=True, exist_ok=True)
    colour = None
    if exp.emitters.species:  # multicolor: the Fisher information on the wavelength
        psf, colour = _colour_objective(exp, z, photons, background)
    penalty = regulariser(exp, psf.aperture)
    if d.footprint_weight > 0 and colour is None:  # keep the PSF compact (dense samples)
        penalty = footprint_term(d.footprint_weight, d.footprint_radius_nm, psf, z, penalty)
    t0 = time.perf_counter()
    res = design_by_crlb(psf, phase, z, photons, background, build_camera(exp),
                         steps=d.crlb_steps, lr=d.crlb_learning_rate, max_minutes=max_minutes,
                         regulariser=penalty, progress=progress, objective=colour)
    history = [{"epoch": h["step"], "steps": 1, "train_loss": h["mean_crlb_nm"],
                "val_loss": h["mean_crlb_nm"], "lr": d.crlb_learning_rate,
                "seconds": h["seconds"]} for h in res.history]
    from deepsmlm.training.model_folder import write_curves

    write_curves(history, out)
    with torch.no_grad():
        learned = phase().detach().clone()
    exp.save(out / "experiment.yaml")
    name = "mean_colour_bound" if colour is not None else "mean_crlb"
    unit = "" if colour is not None else "_nm"
    return {"objective": "crlb" if colour is None else "crlb-colour",
            "parameterization": "zernike", "start": d.start,
            "noll": list(noll), "coefficients_rad": phase.coefficients.detach().tolist(),
            f"{name}_start{unit}": res.start_nm, f"{name}{unit}": res.best_nm,
            "photons": photons, "background_per_px": background,
            "steps": len(res.history) - 1, "seconds": time.perf_counter() - t0,
            "phase": learned, "start_phase": start}



def _colour_objective(exp, z: torch.Tensor, photons: float, background: float):
    """A multicolor experiment's CRLB objective: a PSF with every species at λ_k − δ, λ_k,
    λ_k + δ (one shared mask, set by the caller as the PSF's mask source) and objective() =
    mean σ_λ/Δλ with the lateral CRLB kept within 1.5× the clear aperture's
    (``fisher.mean_colour_bound``)."""
    from deepsmlm.design.fisher import COLOUR_DELTA_NM, mean_colour_bound

    species = exp.emitters.species
    if len(species) < 2:
        raise UserError("design: a colour design needs two or more emitters.species")
    probe = exp.model_copy(deep=True)
    # 3K wavelengths (more than an experiment file may list: built, not validated)
    probe.emitters = probe.emitters.model_copy(update={"species": [
        s.model_copy(update={"name": f"{s.name}{tag}", "wavelength_nm": s.wavelength_nm + dl})
        for s in species
        for tag, dl in (("-", -COLOUR_DELTA_NM), ("", 0.0), ("+", COLOUR_DELTA_NM))]})
    psf = build_psf(probe)
    triples = [tuple(psf.psfs[3 * k:3 * k + 3]) for k in range(len(species))]
    lam = torch.tensor([s.wavelength_nm for s in species])
    gap = (lam[:, None] - lam[None, :]).abs() + torch.eye(len(lam)) * 1e9
    spacing = gap.min(1).values
    camera = build_camera(exp)
    grid = psf.psfs[0].aperture
    psf.set_mask_phase(torch.zeros(grid.shape, device=grid.device))
    with torch.no_grad():  # the clear aperture's lateral CRLB bounds the design's
        _, reference = mean_colour_bound(triples, spacing, z, photons, background, camera)
    return psf, lambda: mean_colour_bound(triples, spacing, z, photons, background, camera,
                                          reference)[0]
