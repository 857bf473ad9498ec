"""Dynamic micro-batching: one bounded queue per model x tower, feeding a runner in worker threads.

Items of one request are queued one by one, so a large request may be split across batches and
small concurrent requests share one; each item's future brings its row back, in request order.
A full queue refuses new work at once (the API answers 429) instead of growing without bound; a
cancelled or timed-out request's items are dropped before they reach the model.
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


@dataclass
class _Job:
    feeds: Feeds
    future: asyncio.Future[np.ndarray]
    enqueued: float = field(default_factory=time.monotonic)


class TowerBatcher:
    def __init__(self, model: str, tower: str, runner: TowerRunner, policy: BatchPolicy) -> None:
        self.model, self.tower, self.runner, self.policy = model, tower, runner, policy
        self._queue: deque[_Job] = deque()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(policy.workers, thread_name_prefix=f"infer-{tower}")
        self._tasks: list[asyncio.Task[None]] = []
        self._batch_seconds = 0.01  # running estimate, for Retry-After
        self._labels = {"model": model, "tower": tower}
        self._depth = metrics.QUEUE_DEPTH.labels(**self._labels)
        # items announced but not queued yet (images being decoded); with none on the way and
        # a light load, a batch goes at once instead of waiting max_wait for company
        self.incoming = 0
        self._last_batch = 0

    @property
    def depth(self) -> int:
        return len(self._queue)

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

    async def submit(self, items: list[Feeds]) -> np.ndarray:
        """Embeddings for `items` in order, shape (len(items), dim)."""
        if not items:
            raise ValueError("no items")
        if len(self._queue) + len(items) > self.policy.max_queue_items:
            metrics.REJECTED.labels(**self._labels).inc(len(items))
            raise QueueFull(self._retry_after())
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._queue.extend(_Job(f, fut) for f, fut in zip(items, futures, strict=True))
        self._depth.set(len(self._queue))
        self._wakeup.set()
        try:
            rows = await asyncio.gather(*futures, return_exceptions=True)
        except BaseException:
            self._drop(futures)  # a cancelled or timed-out request frees its slots at once
            raise
        arrays: list[np.ndarray] = []
        for row in rows:
            if isinstance(row, BaseException):
                raise row
            arrays.append(row)
        return np.stack(arrays)

    def _drop(self, futures: list[asyncio.Future[np.ndarray]]) -> None:
        for fut in futures:
            fut.cancel()
        self._queue = deque(job for job in self._queue if not job.future.done())
        self._depth.set(len(self._queue))

    def _retry_after(self) -> int:
        batches = len(self._queue) / self.policy.max_batch_size / self.policy.workers
        return max(1, math.ceil(batches * self._batch_seconds))

    async def _wait_for_batch(self) -> None:
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.incoming <= 0 and self._last_batch <= 1:
            return
        deadline = self._queue[0].enqueued + self.policy.max_wait_s
        while len(self._queue) < self.policy.max_batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Job]:
        batch: list[_Job] = []
        while self._queue and len(batch) < self.policy.max_batch_size:
            job = self._queue.popleft()
            if not job.future.done():
                batch.append(job)
        self._depth.set(len(self._queue))
        return batch

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_for_batch()
            batch = self._take_batch()
            if not batch:
                continue
            self._last_batch = len(batch)
            stacked = {k: np.stack([job.feeds[k] for job in batch]) for k in batch[0].feeds}
            started = time.perf_counter()
            try:
                out = await loop.run_in_executor(self._executor, self.runner.run, stacked)
            except Exception as exc:
                err = exc if isinstance(exc, RunnerError) else RunnerError(str(exc))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            elapsed = time.perf_counter() - started
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * elapsed
            metrics.BATCH_SIZE.labels(**self._labels).observe(len(batch))
            metrics.INFERENCE_SECONDS.labels(**self._labels).observe(elapsed)
            metrics.ITEMS.labels(**self._labels).inc(len(batch))
            for job, row in zip(batch, out, strict=True):
                if not job.future.done():
                    job.future.set_result(row)
