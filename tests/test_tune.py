"""``deepsmlm tune``: the training's last step (threshold, decoding, σ calibration) again,
on the model's experiment or another, without touching the weights."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import yaml

from deepsmlm.cli import main

from .conftest import tiny_fastloc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune")
    exp = tiny_fastloc(density_per_um2=0.4, steps_per_epoch=20, max_epochs=2)
    (d / "exp.yaml").write_text(yaml.safe_dump(exp))
    assert main(["train", str(d / "exp.yaml"), "--out", str(d / "model"), "--quiet"]) == 0
    return d


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tune_on_the_models_own_frames_repeats_the_training_tuning(trained, capsys):
    model = trained / "model"
    before = json.loads((model / "model.json").read_text())
    weights, experiment = digest(model / "weights.safetensors"), digest(model / "experiment.yaml")
    assert main(["tune", str(model)]) == 0
    assert "validation Jaccard" in capsys.readouterr().out
    after = json.loads((model / "model.json").read_text())
    assert after["threshold"] == before["threshold"]
    assert after["settings"] == before["settings"]  # decoding and σ calibration alike
    tuned_on = after["validation"].pop("tuned_on")
    assert after["validation"] == before["validation"]
    assert tuned_on["frames"] == 16 and tuned_on["experiment"].endswith("experiment.yaml")
    assert digest(model / "weights.safetensors") == weights
    assert digest(model / "experiment.yaml") == experiment


def test_tune_on_other_frames_records_them_and_keeps_the_weights(trained):
    model = trained / "model"
    weights = digest(model / "weights.safetensors")
    exp = tiny_fastloc(density_per_um2=1.5)
    exp["background"] = {"photons_per_px": [80, 80]}
    (trained / "dim.yaml").write_text(yaml.safe_dump(exp))
    assert main(["tune", str(model), "--experiment", str(trained / "dim.yaml"),
                 "--frames", "12", "--seed", "9"]) == 0
    card = json.loads((model / "model.json").read_text())
    assert card["validation"]["tuned_on"] == {"experiment": str((trained / "dim.yaml").resolve()),
                                              "frames": 12, "seed": 9}
    assert 0.0 < card["threshold"] < 1.0
    assert digest(model / "weights.safetensors") == weights


def test_tuning_for_the_efficiency_trades_found_emitters_for_precise_ones(trained, tmp_path):
    import shutil

    tuned = {}
    for objective in ("jaccard", "efficiency"):
        model = tmp_path / objective
        shutil.copytree(trained / "model", model)
        assert main(["tune", str(model), "--objective", objective]) == 0
        tuned[objective] = json.loads((model / "model.json").read_text())["validation"]
        assert tuned[objective]["objective"] == objective
    jac, eff = tuned["jaccard"], tuned["efficiency"]  # the same frames, the same options
    # this model's best Jaccard (≈ 65 %) and best efficiency (≈ 22 %) are different choices
    assert eff["efficiency"] > jac["efficiency"] and jac["jaccard"] > eff["jaccard"]
    # E = 100 − sqrt((100 − J)² + RMSE²) for this 2D model, as recorded
    assert eff["efficiency"] == pytest.approx(
        100 - ((100 - eff["jaccard"]) ** 2 + eff["rmse_xy_nm"] ** 2) ** 0.5)


@pytest.mark.parametrize("edit, message", [
    ({"optics": {"psf": "gaussian", "pixel_size_nm": 160}}, "differs from the model's"),
    ({"training": {"model": "deepstorm"}}, "training section is for deepstorm"),
])
def test_tune_refuses_an_experiment_the_model_cannot_serve(trained, capsys, edit, message):
    exp = {**tiny_fastloc(), **edit}
    (trained / "bad.yaml").write_text(yaml.safe_dump(exp))
    assert main(["tune", str(trained / "model"), "--experiment", str(trained / "bad.yaml")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_tune_without_a_model_folder_says_so(tmp_path, capsys):
    assert main(["tune", str(tmp_path / "nothing")]) == 2
    assert "model folder not found" in capsys.readouterr().err


def _card(**settings):
    from types import SimpleNamespace

    return SimpleNamespace(pixel_size_nm=100.0, method="fastloc", settings=settings)


def _exp(z_range_nm):
    from deepsmlm.config import experiment_from_dict

    d = tiny_fastloc()
    d["emitters"]["z_range_nm"] = z_range_nm
    return experiment_from_dict(d)


@pytest.mark.parametrize("z_range_nm, refused", [
    ([-400, 400], False), ([-500, 500], False), ([-600, 400], True), ([0, 700], True)])
def test_tune_keeps_a_3d_model_within_its_depths(z_range_nm, refused):
    from deepsmlm.errors import UserError
    from deepsmlm.steps.tune import check_tuning_experiment

    card = _card(localize_z=True, z_range_nm=[-500.0, 500.0])
    if refused:
        with pytest.raises(UserError, match=r"reaches beyond the depths the model localizes"):
            check_tuning_experiment(_exp(z_range_nm), card, "fastloc", "exp.yaml")
    else:
        check_tuning_experiment(_exp(z_range_nm), card, "fastloc", "exp.yaml")


def test_tune_lets_a_2d_model_meet_a_sample_with_depth():
    from deepsmlm.steps.tune import check_tuning_experiment, model_z_range_nm

    for card in (_card(localize_z=False, z_range_nm=[0.0, 0.0]), _card()):  # fastloc 2D, Deep-STORM
        assert model_z_range_nm(card) is None
        check_tuning_experiment(_exp([-750, 750]), card, "fastloc", "exp.yaml")
    # DeepSTORM3D has no localize_z: its z range is what it localizes over
    assert model_z_range_nm(_card(z_range_nm=[2000, 6000])) == (2000.0, 6000.0)


def test_training_tunes_on_tune_frames_patches_of_the_validation_seed():
    from deepsmlm.build import build_patch_sampler
    from deepsmlm.config import experiment_from_dict
    from deepsmlm.data.datasets import fixed_batches
    from deepsmlm.training.train import tuning_batches

    exp = experiment_from_dict(tiny_fastloc())
    t = exp.training
    val = fixed_batches(build_patch_sampler(exp), t.val_frames, t.batch_size, t.seed + 1)
    tune = tuning_batches(exp, val, None)
    assert sum(len(b.inputs_adu) for b in tune) == t.tune_frames == 16
    # the validation seed: its first patches are the validation patches
    assert torch.equal(tune[0].inputs_adu, val[0].inputs_adu)
    assert tuning_batches(exp, val, stack=("frames", "truth")) is val  # a user's stack
    d = tiny_fastloc()
    d["training"]["tune_frames"] = None
    assert tuning_batches(experiment_from_dict(d), val, None) is val
    assert experiment_from_dict({"training": {"model": "fastloc"}}).training.tune_frames == 512


def test_tuning_score_by_hand():
    from deepsmlm.training.train import tuning_score

    r = {"jaccard": 80.0, "efficiency_xy": 100 - 5 ** 0.5 * 10, "efficiency_z": 40.0}
    assert tuning_score(r, "jaccard", fit_z=True) == 80.0
    assert tuning_score(r, "efficiency", fit_z=False) == pytest.approx(77.639, abs=1e-3)
    assert tuning_score(r, "efficiency", fit_z=True) == pytest.approx((77.639 + 40) / 2,
                                                                      abs=1e-3)
    nothing = {"jaccard": float("nan"), "efficiency_xy": float("nan"),
               "efficiency_z": float("nan")}
    assert tuning_score(nothing, "jaccard", False) < 0 < tuning_score(r, "jaccard", False)
    assert tuning_score(nothing, "efficiency", False) < -100
    with pytest.raises(ValueError, match="objective"):
        tuning_score(r, "recall", False)
