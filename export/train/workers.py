"""Batch preparation in worker processes.

On a GPU the U-Nets train faster than one core can augment their samples (0.5 ms a crop on the
development CPU, about 40 s an epoch for 75,000 crops), so the GPU would wait for numpy and OpenCV.
The workers are fresh (spawned) processes: a process forked after torch or OpenCV started their
thread pools hangs in its first parallel call. They read the sample arrays from .npy files mapped
into memory, so the page cache holds one copy for all of them. Each job names a batch by its indices
and its own random stream, so the batches are the same whatever the number of workers (0 = in the
training process).
"""

from __future__ import annotations

import multiprocessing
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mgs_core.errors import MgsError

Arrays = Mapping[str, np.ndarray]
Job = Callable[..., Any]
Run = Callable[[Job, Iterable[tuple]], Iterator[Any]]

_shared: Arrays = {}


def _start_worker(files: dict[str, str]) -> None:
    global _shared
    _shared = {name: np.load(path, mmap_mode="r") for name, path in files.items()}
    cv2.setNumThreads(1)


def _call(job: Job, args: tuple) -> Any:
    return job(_shared, *args)


@contextmanager
def batch_workers(workers: int, arrays: Arrays, window_per_worker: int = 3) -> Iterator[Run]:
    """Yields run(job, args_list): the results of job(arrays, *args) for each args, in order.

    At most `window_per_worker` jobs per worker are in flight, so a trainer slower than its workers
    does not pile up an epoch of prepared batches in memory."""
    if workers < 0:
        raise MgsError(f"--workers must be 0 (none) or more, got {workers}")
    if workers == 0:
        yield lambda job, jobs: (job(arrays, *args) for args in jobs)
        return
    with tempfile.TemporaryDirectory(prefix="mgs-batches-") as folder:
        files = {name: str(Path(folder) / f"{name}.npy") for name in arrays}
        for name, path in files.items():
            np.save(path, arrays[name])
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(files,)) as pool:

            def run(job: Job, jobs: Iterable[tuple]) -> Iterator[Any]:
                pending: deque = deque()
                for args in jobs:
                    pending.append(pool.submit(_call, job, args))
                    if len(pending) >= workers * window_per_worker:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()

            yield run
