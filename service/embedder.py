"""Inputs -> embeddings for one model: decode/tokenize off the event loop, then the batchers.

This is the one place the API (embeddings, and later collections and classification) turns
texts and images into vectors, so every route gets the same limits, errors and batching.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from service import metrics
from service.batcher import BatchPolicy, QueueFull, TowerBatcher
from service.imaging import ImageError, ImagePreprocessor
from service.inputs import ImageSource, source_bytes
from service.manifest import Tower
from service.registry import LoadedModel, Registry
from service.runners.base import RunnerError

T = TypeVar("T")


class UnsupportedModality(LookupError):
    def __init__(self, model: str, tower: str) -> None:
        super().__init__(f"model {model!r} has no {tower} encoder")
        self.model, self.tower = model, tower


class DeadlineExceeded(TimeoutError):
    """The request's deadline passed before its items were embedded; they were dropped."""


@dataclass
class TextResult:
    vectors: np.ndarray
    tokens: int


class Embedder:
    def __init__(
        self,
        registry: Registry,
        policy: BatchPolicy,
        decode_pool: Executor,
        max_pending_decodes: int,
        deadline_s: float,
    ) -> None:
        self.registry = registry
        self.deadline_s = deadline_s
        self.batchers: dict[tuple[str, Tower], TowerBatcher] = {
            (name, tower): TowerBatcher(name, tower, runner, policy)
            for name, model in registry.models.items()
            for tower, runner in model.runners.items()
        }
        self._decode_pool = decode_pool
        self._pending_decodes = 0
        self._max_pending_decodes = max_pending_decodes

    def _replace_pool(self) -> Executor:
        broken = self._decode_pool
        broken.shutdown(wait=False, cancel_futures=True)
        workers = getattr(broken, "_max_workers", 1)
        return decode_pool(workers, workers if isinstance(broken, ProcessPoolExecutor) else 0)

    def start(self) -> None:
        for batcher in self.batchers.values():
            batcher.start()

    async def stop(self) -> None:
        await asyncio.gather(*(b.stop() for b in self.batchers.values()))
        self._decode_pool.shutdown(wait=True, cancel_futures=True)

    def batcher(self, model: LoadedModel, tower: Tower) -> TowerBatcher:
        try:
            return self.batchers[(model.name, tower)]
        except KeyError:
            raise UnsupportedModality(model.name, tower) from None

    async def embed_texts(self, model: LoadedModel, texts: list[str]) -> TextResult:
        batcher = self.batcher(model, "text")
        assert model.tokenizer is not None  # a text tower always has one (checked at load)
        ids, mask = model.tokenizer.encode(texts)
        feeds = {"input_ids": ids, "attention_mask": mask}
        return TextResult(await self._timed(batcher.submit(feeds)), int(mask.sum()))

    async def _timed(self, work: Awaitable[T]) -> T:
        try:
            async with asyncio.timeout(self.deadline_s):
                return await work
        except TimeoutError:
            raise DeadlineExceeded(f"not done within {self.deadline_s}s") from None

    async def embed_images(self, model: LoadedModel, images: Sequence[ImageSource]) -> np.ndarray:
        """Each image is decoded on the pool and queued as soon as it is ready, so decoding
        overlaps inference; bad images are reported together, by index."""
        batcher = self.batcher(model, "image")
        assert model.images is not None
        pre = model.images
        input_name = batcher.runner.spec.inputs[0].name
        if self._pending_decodes + len(images) > self._max_pending_decodes:
            raise QueueFull(1)
        loop = asyncio.get_running_loop()

        async def one(source: ImageSource) -> np.ndarray:
            try:
                pixels, seconds = await loop.run_in_executor(
                    self._decode_pool, decode_image, pre, source
                )
            except BrokenExecutor:  # a decode process died: replace the pool, refuse this one
                self._decode_pool = self._replace_pool()
                raise RunnerError("an image decode worker died; retry") from None
            finally:
                batcher.incoming -= 1
            metrics.DECODE_SECONDS.observe(seconds)
            return (await batcher.submit({input_name: pixels[None]}))[0]

        self._pending_decodes += len(images)
        batcher.incoming += len(images)  # tells the batcher that more items are on their way
        try:
            results = await self._timed(
                asyncio.gather(*(one(d) for d in images), return_exceptions=True)
            )
        finally:
            self._pending_decodes -= len(images)
        bad = [(i, r) for i, r in enumerate(results) if isinstance(r, ImageError)]
        if bad:
            raise ImageBatchError(bad)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return np.stack(results)  # type: ignore[arg-type]


def decode_image(pre: ImagePreprocessor, source: ImageSource) -> tuple[np.ndarray, float]:
    """Runs on the decode pool (threads or processes, so it is a module-level function; the
    model's own preprocessor goes along, pickled for a process, shared by threads)."""
    started = time.perf_counter()
    pixels = pre(source_bytes(source))
    seconds = time.perf_counter() - started
    limits = pre.limits
    if seconds > limits.max_decode_s:  # the pixel limit bounds the work; this bounds the time
        raise ImageError(
            "image_decode_too_slow",
            f"image took {seconds:.2f}s to decode, limit {limits.max_decode_s}s",
        )
    return pixels, seconds


def decode_pool(threads: int, processes: int) -> Executor:
    if processes > 0:
        context = multiprocessing.get_context("forkserver")  # no fork of a threaded server
        return ProcessPoolExecutor(processes, mp_context=context)
    return ThreadPoolExecutor(threads, thread_name_prefix="decode")


class ImageBatchError(Exception):
    """Some images of a request could not be decoded: (index, error) pairs."""

    def __init__(self, errors: list[tuple[int, ImageError]]) -> None:
        super().__init__(f"{len(errors)} images failed")
        self.errors = errors
