"""``deepsmlm evaluate``: match localizations to the truth; every metric, a short report."""

from __future__ import annotations

import json
import math

from deepsmlm.errors import UserError
from deepsmlm.io.atomic import atomic_write_text
from deepsmlm.io.localizations import read_localizations
from deepsmlm.steps.common import check_number, field_of, json_safe


def run_evaluate(pred_path, truth_path, tol_xy_nm: float = 250.0, tol_z_nm: float = 500.0,
                 method: str = "greedy", border_nm: float = 0.0, experiment=None,
                 pixel_size_nm: float | None = None, json_out=None) -> dict:
    """Match PRED to TRUTH and compute every metric; optionally write JSON."""
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
    res = evaluate(truth["frame"], truth["xyz_nm"], pred["frame"], pred["xyz_nm"],
                   gt_photons=truth["photons"], tol_xy_nm=tol_xy_nm, tol_z_nm=tol_z_nm,
                   method=method, field_nm=field, border_nm=border_nm)
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
    return "\n".join(lines)
