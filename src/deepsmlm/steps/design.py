"""``deepsmlm design``: run a design and write its folder (see ``design.outputs`` for the
files)."""

from __future__ import annotations

from pathlib import Path

from deepsmlm.errors import UserError
from deepsmlm.steps.common import check_device, check_method_scene, check_minutes, locked_run


def run_design(experiment, out, objective: str = "end-to-end",
               max_minutes: float | None = None, resume: bool = False,
               init_model=None, progress: bool = True, device: str = "cpu") -> dict:
    """Design a mask into ``out``; returns design.json's content. ``device``: where an
    end-to-end design's network and rendering run (a CRLB design runs on the CPU)."""
    from deepsmlm.training.distributed import from_env

    check_minutes(max_minutes)
    device = check_device(device)
    if from_env().enabled:  # every rank would write the same folder
        raise UserError("design runs in one process; torchrun (DDP) is for deepsmlm train")
    out = Path(out)
    if objective not in ("end-to-end", "crlb"):
        raise UserError(f"--objective must be end-to-end or crlb, got {objective!r}")
    if init_model is not None and (objective != "end-to-end" or resume):
        raise UserError("--init-model starts a new end-to-end design (not crlb, not --resume)")
    if resume and objective != "end-to-end":
        raise UserError("--resume is for end-to-end designs (a CRLB design is quick to rerun)")
    from deepsmlm.design.end_to_end import STAGES

    with locked_run(experiment, out, resume, "design", "DIR", "a design",
                    check_method_scene if objective == "end-to-end" else None,
                    STAGES) as exp:
        return _design(exp, out, objective, max_minutes, resume, init_model, progress, device)


def _design(exp, out: Path, objective: str, max_minutes, resume: bool, init_model,
            progress: bool, device: str = "cpu") -> dict:
    """The design itself, in a folder this run holds; returns design.json's content."""
    from deepsmlm.build import pupil_grid
    from deepsmlm.design import end_to_end, outputs
    from deepsmlm.io.tensors import write_json
    from deepsmlm.plotting import footprint_plot

    if objective == "crlb":
        res = end_to_end.design_crlb(exp, out, max_minutes=max_minutes, progress=progress)
    else:
        res = end_to_end.design_end_to_end(exp, out, max_minutes=max_minutes, resume=resume,
                                           init_model=init_model, progress=progress,
                                           device=device)
    grid = pupil_grid(exp.optics)
    phase, start = res.pop("phase"), res.pop("start_phase")
    if objective == "end-to-end":
        for name, p in (("start", start), ("learned", phase)):
            res[f"mean_crlb_{name}_nm"] = _mean_crlb(exp, p)
        if len(exp.emitters.species or ()) >= 2:  # and the colour objective of each mask
            res["mean_colour_bound_start"], res["mean_colour_bound_learned"] = \
                end_to_end.colour_objectives_of(exp, [start, phase])
    outputs.write_mask(phase, grid, out, {"objective": objective})
    levels = exp.design.height_levels
    if levels is not None:  # the printed mask: its CRLB after rounding to the levels
        res["mean_crlb_quantised_nm"] = _mean_crlb(exp, outputs.write_levels(phase, grid,
                                                                             out, levels))
    outputs.write_figures(exp, grid, phase, start, out)
    res["shape"] = outputs.shape_report(exp, {"start": start, "learned": phase})
    footprint_plot(res["shape"], out / "footprint.png")
    write_json(out / "design.json", res)
    return res


def _mean_crlb(exp, phase) -> float:
    """Mean CRLB (σx + σy + σz)/3 [nm] of one phase over the z range, averaged over the
    emission wavelengths of a multicolor experiment (each species' PSF with its own
    thin-element scale of the phase)."""
    import torch

    from deepsmlm.build import build_camera, build_psf, crlb_operating_point
    from deepsmlm.design.fisher import mean_crlb_nm
    from deepsmlm.design.outputs import species_views

    z = torch.linspace(*exp.emitters.z_range_nm, exp.design.crlb_z_samples)
    photons, bg = crlb_operating_point(exp)
    camera = build_camera(exp)
    bounds = []
    with torch.no_grad():
        for _, one, scale in species_views(exp, build_psf(exp)):
            one.set_mask_source(None)  # a species' PSF: its own scaled phase
            one.set_mask_phase(phase * scale)
            bounds.append(float(mean_crlb_nm(one, z, photons, bg, camera)))
    return sum(bounds) / len(bounds)
