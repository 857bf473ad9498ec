"""Dynamic micro-batching: one bounded queue per model x tower, feeding a runner in worker threads.

A request is queued as one job holding all its rows (one future, no per-item bookkeeping on the
event loop); a batch takes rows from the jobs at the head of the queue, so small concurrent
requests share a batch and a large request may be split across batches. A job's future is set
once all its rows are back, in request order. A full queue refuses new work at once (the API
answers 429) instead of growing without bound; a cancelled or timed-out request's rows are
dropped before they reach the model.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from service import metrics
from service.runners.base import RunnerError, TowerRunner

Feeds = dict[str, np.ndarray]


class QueueFull(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__("inference queue is full")
        self.retry_after_s = retry_after_s


@dataclass
class BatchPolicy:
    max_batch_size: int = 64
    max_wait_s: float = 0.002
    max_queue_items: int = 2048
    workers: int = 1


@dataclass(eq=False)  # compared by identity (its arrays have no truth value)
class _Job:
    """One request's rows: `taken` of them handed to batches so far, `done` back."""

    feeds: Feeds
    rows: int
    future: asyncio.Future[np.ndarray]
    out: np.ndarray | None = None
    taken: int = 0
    done: int = 0
    enqueued: float = field(default_factory=time.monotonic)


# a batch: (job, first row, end row) slices, in queue order
_Slices = list[tuple[_Job, int, int]]


class TowerBatcher:
    def __init__(self, model: str, tower: str, runner: TowerRunner, policy: BatchPolicy) -> None:
        self.model, self.tower, self.runner, self.policy = model, tower, runner, policy
        self._queue: deque[_Job] = deque()
        self._queued = 0  # rows waiting in the queue (not yet taken by a batch)
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(policy.workers, thread_name_prefix=f"infer-{tower}")
        self._tasks: list[asyncio.Task[None]] = []
        self._batch_seconds = 0.01  # running estimate, for Retry-After
        self._labels = {"model": model, "tower": tower}
        self._depth = metrics.QUEUE_DEPTH.labels(**self._labels)
        self._batch_size = metrics.BATCH_SIZE.labels(**self._labels)
        self._inference = metrics.INFERENCE_SECONDS.labels(**self._labels)
        self._items = metrics.ITEMS.labels(**self._labels)
        # items announced but not queued yet (images being decoded); with none on the way and
        # a light load, a batch goes at once instead of waiting max_wait for company
        self.incoming = 0
        self._last_batch = 0

    @property
    def depth(self) -> int:
        return self._queued

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.policy.workers)]

    async def stop(self) -> None:
        """Finish what is queued, then stop the workers (graceful shutdown drains)."""
        while self._queue:
            await asyncio.sleep(0.005)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def submit(self, feeds: Feeds) -> np.ndarray:
        """Embeddings for the rows of `feeds` (every array has them on axis 0), in order,
        shape (rows, dim)."""
        rows = len(next(iter(feeds.values())))
        if rows == 0:
            raise ValueError("no items")
        if self._queued + rows > self.policy.max_queue_items:
            metrics.REJECTED.labels(**self._labels).inc(rows)
            raise QueueFull(self._retry_after())
        job = _Job(feeds, rows, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._queued += rows
        self._depth.set(self._queued)
        self._wakeup.set()
        try:
            return await job.future
        except asyncio.CancelledError:
            self._drop(job)  # a cancelled or timed-out request frees its slots at once
            raise

    def _drop(self, job: _Job) -> None:
        job.future.cancel()
        if job in self._queue:
            self._queue.remove(job)
            self._queued -= job.rows - job.taken
            self._depth.set(self._queued)

    def _retry_after(self) -> int:
        batches = self._queued / self.policy.max_batch_size / self.policy.workers
        return max(1, math.ceil(batches * self._batch_seconds))

    async def _wait_for_batch(self) -> None:
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.incoming <= 0 and self._last_batch <= 1:
            return
        deadline = self._queue[0].enqueued + self.policy.max_wait_s
        while self._queued < self.policy.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> _Slices:
        batch: _Slices = []
        room = self.policy.max_batch_size
        while self._queue and room:
            job = self._queue[0]
            if job.future.done():  # cancelled: its rows never run
                self._queue.popleft()
                self._queued -= job.rows - job.taken
                continue
            start = job.taken
            end = min(job.rows, start + room)
            batch.append((job, start, end))
            job.taken = end
            room -= end - start
            self._queued -= end - start
            if end == job.rows:
                self._queue.popleft()
        self._depth.set(self._queued)
        return batch

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_batch()
            batch = self._take_batch()
            if not batch:
                continue
            size = sum(end - start for _, start, end in batch)
            self._last_batch = size
            if len(batch) == 1:
                job, start, end = batch[0]
                stacked = {k: v[start:end] for k, v in job.feeds.items()}
            else:
                stacked = {
                    k: np.concatenate([job.feeds[k][start:end] for job, start, end in batch])
                    for k in batch[0][0].feeds
                }
            started = time.perf_counter()
            try:
                out = await loop.run_in_executor(self._executor, self.runner.run, stacked)
            except Exception as exc:
                err = exc if isinstance(exc, RunnerError) else RunnerError(str(exc))
                for job, _, _ in batch:
                    if not job.future.done():
                        job.future.set_exception(err)
                    self._drop(job)  # its other rows, if any, are not worth running
                continue
            elapsed = time.perf_counter() - started
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * elapsed
            self._batch_size.observe(size)
            self._inference.observe(elapsed)
            self._items.inc(size)
            offset = 0
            for job, start, end in batch:
                rows = out[offset : offset + end - start]
                offset += end - start
                if job.future.done():
                    continue
                if start == 0 and end == job.rows:  # the whole request in this batch
                    job.future.set_result(rows)
                    continue
                if job.out is None:
                    job.out = np.empty((job.rows, *out.shape[1:]), dtype=out.dtype)
                job.out[start:end] = rows
                job.done += end - start
                if job.done == job.rows:
                    job.future.set_result(job.out)
