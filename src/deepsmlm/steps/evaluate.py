"""``deepsmlm evaluate``: match localizations to the truth; every metric, a short report."""

from __future__ import annotations

import json
import math

from deepsmlm.errors import UserError
from deepsmlm.io.atomic import atomic_write_text
from deepsmlm.io.localizations import read_localizations
from deepsmlm.steps.common import check_number, field_of, json_safe, species_names_of


def run_evaluate(pred_path, truth_path, tol_xy_nm: float = 250.0, tol_z_nm: float = 500.0,
                 method: str = "greedy", border_nm: float = 0.0, experiment=None,
                 pixel_size_nm: float | None = None, json_out=None) -> dict:
    """Match PRED to TRUTH and compute every metric; optionally write JSON.

    When both tables carry a ``species`` column the multicolor metrics are added
    (``evaluation.metrics.species_metrics``: ``species_accuracy``, ``species_confusion``,
    ``species_jaccard``, ``by_species``) with ``species_names`` (from the experiment, the
    files' metadata or ``localize.json``; the index where none is known); when only one
    does, ``species_note`` says so and the metrics are colour-blind."""
    from deepsmlm.evaluation.metrics import evaluate

    check_number("--tol-xy-nm", tol_xy_nm, above=0.0)
    check_number("--tol-z-nm", tol_z_nm, above=0.0)
    check_number("--border-nm", border_nm, at_least=0.0)
    check_number("--pixel-size-nm", pixel_size_nm, above=0.0)
    if method not in ("greedy", "hungarian"):
        raise UserError(f"--method must be greedy or hungarian, got {method!r}")
    pred = read_localizations(pred_path, pixel_size_nm).numpy()
    truth = read_localizations(truth_path, pixel_size_nm).numpy()
    field = field_of(truth_path, experiment) or field_of(pred_path, experiment)
    if border_nm > 0 and field is None:
        raise UserError("--border-nm needs the field of view: give --experiment")
    species: dict = {}
    note = None
    if "species" in pred and "species" in truth:
        names = (species_names_of(pred_path, experiment)
                 or species_names_of(truth_path, experiment))
        top = max(int(truth["species"].max(initial=-1)), int(pred["species"].max(initial=-1)))
        n = max(len(names), top + 1)
        names = list(names) + [str(k) for k in range(len(names), n)]
        species = dict(gt_species=truth["species"], pred_species=pred["species"], n_species=n)
    elif "species" in pred or "species" in truth:
        has, lacks = ((pred_path, truth_path) if "species" in pred else (truth_path, pred_path))
        note = (f"only {has} carries species ({lacks} has no species column): the metrics "
                "are colour-blind")
    res = evaluate(truth["frame"], truth["xyz_nm"], pred["frame"], pred["xyz_nm"],
                   gt_photons=truth["photons"], tol_xy_nm=tol_xy_nm, tol_z_nm=tol_z_nm,
                   method=method, field_nm=field, border_nm=border_nm, **species)
    if species:
        res["species_names"] = names
    if note:
        res["species_note"] = note
    res.update(pred=str(pred_path), truth=str(truth_path))
    if json_out:
        atomic_write_text(json_out, json.dumps(json_safe(res), indent=2))
    return res


def format_report(res: dict) -> str:
    """A short human-readable table of an evaluation."""
    def f(v, fmt="{:.2f}"):
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    lines = [
        f"matching: {res['method']}, tolerance {res['tol_xy_nm']:.0f} nm lateral, "
        f"{res['tol_z_nm']:.0f} nm axial",
        f"ground truth {res['n_gt']}, predicted {res['n_pred']}: TP {res['tp']}, "
        f"FP {res['fp']}, FN {res['fn']}",
        f"Jaccard {f(res['jaccard'])} %   recall {f(res['recall'], '{:.3f}')}   "
        f"precision {f(res['precision'], '{:.3f}')}",
        f"RMSE lateral {f(res['rmse_xy_nm'])} nm   axial {f(res['rmse_z_nm'])} nm   "
        f"bias ({f(res['bias_x_nm'])}, {f(res['bias_y_nm'])}, {f(res['bias_z_nm'])}) nm",
        f"efficiency lateral {f(res['efficiency_xy'])}   axial {f(res['efficiency_z'])}",
    ]
    if res.get("by_density"):
        lines.append("by density (emitters/µm² per frame):  Jaccard  RMSE_xy  n_gt")
        for b in res["by_density"]:
            hi = "∞" if b["hi"] > 1e6 else f"{b['hi']:g}"
            lines.append(f"  [{b['lo']:g}, {hi})".ljust(38)
                         + f"{f(b['jaccard']):>7}  {f(b['rmse_xy_nm']):>7}  {b['tp'] + b['fn']}")
    lines += species_report(res)
    return "\n".join(lines)


def species_report(res: dict) -> list[str]:
    """The multicolor part of the report: accuracy, the per-species table, the confusion
    matrix (or the note saying why there is none)."""
    def f(v, fmt="{:.2f}"):
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)

    if res.get("species_note"):
        return [f"note: {res['species_note']}"]
    if "by_species" not in res:
        return []
    names = res.get("species_names") or [str(k) for k in range(res["n_species"])]
    acc = res["species_accuracy"]
    lines = [f"species: accuracy {f(None if acc is None else 100 * acc)} % of "
             f"{res['species_pairs']} matched pairs; multicolor Jaccard "
             f"{f(res['species_jaccard'])} % (found = matched and classified right)"]
    if res["species_unknown_truth"] or res["species_unknown_pred"]:
        lines.append(f"  matched pairs of unknown species (-1): truth "
                     f"{res['species_unknown_truth']}, predicted {res['species_unknown_pred']}")
    width = max([8, *(len(n) for n in names)]) + 2
    lines.append("  " + "species".ljust(width) + "  n_gt  n_pred  Jaccard  recall  precision"
                 "  RMSE_xy  recall (colour-blind)")
    for r, name in zip(res["by_species"], names):
        lines.append("  " + name.ljust(width)
                     + f"{r['n_gt']:>6}  {r['n_pred']:>6}  {f(r['jaccard']):>7}  "
                     f"{f(r['recall'], '{:.3f}'):>6}  {f(r['precision'], '{:.3f}'):>9}  "
                     f"{f(r['rmse_xy_nm']):>7}  {f(r['detection_recall'], '{:.3f}'):>21}")
    lines.append("  confusion (rows: true species, columns: predicted; matched pairs)")
    cell = max([6, *(len(n) for n in names)]) + 1
    lines.append("  " + " " * width + "".join(n.rjust(cell) for n in names))
    for name, row in zip(names, res["species_confusion"]):
        lines.append("  " + name.ljust(width) + "".join(str(v).rjust(cell) for v in row))
    return lines
