"""``deepsmlm train``: a model of the experiment's method, into a model folder."""

from __future__ import annotations

from deepsmlm.errors import UserError
from deepsmlm.steps.common import check_device, check_method_scene, check_minutes, locked_run


def run_train(experiment, out, max_minutes: float | None = None, resume: bool = False,
              device: str = "cpu", stack=None, truth=None, progress: bool = True):
    """Train into the model folder ``out`` (``training.train.train``); returns its card.

    ``stack``/``truth``: train on a user's simulated stack and its ground truth instead of
    frames simulated on the fly."""
    from deepsmlm.training.train import train

    check_minutes(max_minutes)
    device = check_device(device)
    data = None
    if stack is not None or truth is not None:
        if stack is None or truth is None:
            raise UserError("training from a stack needs both --stack and --truth")
        from deepsmlm.io.localizations import read_localizations
        from deepsmlm.io.movies import open_movie

        movie = open_movie(stack)  # a TIFF, a TIFF series or a Zarr array
        frames = movie.read(0, len(movie))
        data = (frames, read_localizations(truth))
    with locked_run(experiment, out, resume, "train", "MODEL", "a model",
                    check_method_scene) as exp:
        return train(exp, out, max_minutes=max_minutes, resume=resume, device=device,
                     progress=progress, stack=data)
