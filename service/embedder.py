"""Inputs -> embeddings for one model: decode/tokenize off the event loop, then the batchers.

This is the one place the API (embeddings, and later collections and classification) turns
texts and images into vectors, so every route gets the same limits, errors and batching.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from service import metrics
from service.batcher import BatchPolicy, QueueFull, TowerBatcher
from service.imaging import ImageError
from service.inputs import ImageSource, source_bytes
from service.manifest import Tower
from service.registry import LoadedModel, Registry

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
        decode_threads: int,
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
        self._decode_pool = ThreadPoolExecutor(decode_threads, thread_name_prefix="decode")
        self._pending_decodes = 0
        self._max_pending_decodes = max_pending_decodes

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
        items = [{"input_ids": ids[i], "attention_mask": mask[i]} for i in range(len(texts))]
        return TextResult(await self._timed(batcher.submit(items)), int(mask.sum()))

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
        preprocess = model.images
        assert preprocess is not None
        input_name = model.manifest.towers["image"].inputs[0].name
        if self._pending_decodes + len(images) > self._max_pending_decodes:
            raise QueueFull(1)
        loop = asyncio.get_running_loop()

        def decode(source: ImageSource) -> np.ndarray:
            started = time.perf_counter()
            pixels = preprocess(source_bytes(source))
            metrics.DECODE_SECONDS.observe(time.perf_counter() - started)
            return pixels

        async def one(source: ImageSource) -> np.ndarray:
            try:
                pixels = await loop.run_in_executor(self._decode_pool, decode, source)
            finally:
                batcher.incoming -= 1
            return (await batcher.submit([{input_name: pixels}]))[0]

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


class ImageBatchError(Exception):
    """Some images of a request could not be decoded: (index, error) pairs."""

    def __init__(self, errors: list[tuple[int, ImageError]]) -> None:
        super().__init__(f"{len(errors)} images failed")
        self.errors = errors
