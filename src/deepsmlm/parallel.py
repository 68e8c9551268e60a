"""Inference on a Dask cluster: frame chunks localized on the workers, returned in order.

``localize_on_dask("local:4", ...)`` starts a ``LocalCluster`` of 4 single-threaded worker
processes; ``localize_on_dask("tcp://HOST:8786", ...)`` uses a running scheduler (the
workers must see the model folder and the movie at the same paths, e.g. on a shared file
system, and have deepsmlm installed). Each task reads its own chunk of frames on its
worker (nothing but the path travels), localizes it with a model loaded once per worker,
and returns the chunk's localizations and sums. The caller receives ``(t0, ChunkResult)``
in frame order — exactly what ``inference.localize_chunks`` yields in one process — with
at most a few chunks per worker in flight, so memory stays bounded on both sides.
"""

from __future__ import annotations

from collections.abc import Iterator

from deepsmlm.errors import UserError

_PREDICTORS: dict = {}  # per worker process: (model, its weights, device, camera) → Predictor


def localize_on_dask(address: str, model_dir, movie, n_frames: int, chunk_frames: int,
                     batch_size: int, device: str, camera: dict, threshold: float,
                     start_frame: int = 0, in_flight_per_worker: int = 2,
                     refiner=None) -> Iterator:
    """Yield ``(t0, ChunkResult)`` for chunks from ``start_frame`` on, in frame order;
    ``refiner`` (``refine.Refiner``), when given, goes to the workers with each chunk."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise UserError("--dask needs the distributed package "
                        "(pip install 'deepsmlm[scale]')") from None
    cluster = None
    if address.startswith("local:"):
        try:
            n_workers = int(address.split(":", 1)[1])
        except ValueError:
            n_workers = 0
        if n_workers < 1:
            raise UserError(f"--dask {address}: expected local:N with N ≥ 1 workers")
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)
    else:
        try:
            client = Client(address, timeout="20s")
        except (OSError, TimeoutError, ValueError) as err:
            raise UserError(f"--dask {address}: cannot reach the scheduler ({err})") from None
    try:
        workers = max(1, len(client.scheduler_info()["workers"]))
        starts = list(range(start_frame, n_frames, chunk_frames))
        args = (str(model_dir), str(movie), device, camera, threshold, batch_size, refiner)
        pending = as_completed()
        queue = iter(starts)
        waiting: dict[int, object] = {}
        next_t0 = start_frame

        bound = workers * in_flight_per_worker

        def top_up() -> None:
            """Submit chunks while fewer than ``bound`` are running or done but waiting
            for an earlier one (so a slow chunk cannot make results pile up)."""
            while pending.count() + len(waiting) < bound:
                t0 = next(queue, None)
                if t0 is None:
                    return
                pending.add(client.submit(_localize_task, *args, t0,
                                          min(t0 + chunk_frames, n_frames), pure=False))

        top_up()
        for future in pending:
            t0, result = future.result()
            future.release()
            waiting[t0] = result
            while next_t0 in waiting:
                yield next_t0, waiting.pop(next_t0)
                next_t0 += chunk_frames
            top_up()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _localize_task(model_dir: str, movie: str, device: str, camera: dict,
                   threshold: float, batch_size: int, refiner, t0: int, t1: int):
    """On a worker: read frames ``t0..t1-1`` of the movie and localize them."""
    import torch

    from deepsmlm.inference import Predictor, localize_chunk, read_chunk
    from deepsmlm.io.movies import open_movie

    try:
        from distributed import get_worker

        torch.set_num_threads(max(1, get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        pass
    from pathlib import Path

    weights = Path(model_dir) / "weights.safetensors"
    stamp = (weights.stat().st_mtime_ns, weights.stat().st_size) if weights.is_file() else None
    # a long-lived cluster may see the folder retrained: the stamp keys the cache too
    key = (model_dir, stamp, device, tuple(sorted(camera.items())))
    pred = _PREDICTORS.get(key)
    if pred is None:
        pred = _PREDICTORS[key] = Predictor.load(model_dir, device, camera)
    pred.refiner = refiner
    pred.card.threshold = threshold
    block, before, after = read_chunk(open_movie(movie), t0, t1, pred.context_frames)
    return t0, localize_chunk(pred, block, t0, batch_size, before, after)
