"""dlib's HOG face detector and face-recognition network on a pool of processes.

dlib runs each call on one core and holds the GIL, so while `svp evaluate` found faces and
measured CSIM (a third of its time) one of a 2-core machine's cores sat idle. Frames are
independent in both, so contiguous chunks go to `workers` spawned processes and come back in
order: the same numbers as in one process. The jobs live beside what they compute
(`metrics.FaceLandmarks`, `identity.FaceIdentity`) and read the worker's models here.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import numpy as np

_models: dict = {}  # this worker's detector and network (`_load`)


def _load(recognition_model: str) -> None:
    import dlib

    _models["detector"] = dlib.get_frontal_face_detector()
    _models["recognizer"] = dlib.face_recognition_model_v1(recognition_model)


def worker_model(name: str):
    """The worker's "detector" or "recognizer" (in a job run by `DlibWorkers.map`)."""
    return _models[name]


class DlibWorkers:
    """`workers` processes, each with the detector and the face-recognition network."""

    def __init__(self, workers: int, recognition_model: str):
        self.workers = workers
        self._pool = ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"),
                                         initializer=_load, initargs=(recognition_model,))

    def map(self, job: Callable[..., list | np.ndarray], *arrays: np.ndarray) -> list:
        """`job(*chunks)` of each of `workers` contiguous chunks of the arrays' rows, in
        order: the results of all chunks, concatenated as lists."""
        chunks = [c for c in np.array_split(np.arange(len(arrays[0])), self.workers) if len(c)]
        parts = self._pool.map(job, *([a[c] for c in chunks] for a in arrays))
        return [row for part in parts for row in part]

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)
