"""Inputs -> embeddings for one model: decode/tokenize off the event loop, then the batchers.

This is the one place the API (embeddings, and later collections and classification) turns
texts and images into vectors, so every route gets the same limits, errors and batching.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Awaitable, Iterator, Sequence
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from service import metrics
from service.batcher import BatchPolicy, QueueFull, TowerBatcher
from service.imaging import ImageError, ImagePreprocessor, open_image
from service.inputs import ImageSource, source_bytes
from service.manifest import Tower
from service.registry import LoadedModel, Registry
from service.runners.base import RunnerError
from service.texts import TextTokenizer

T = TypeVar("T")

# Texts up to this many characters in all are tokenised on the event loop (about 1 ms; a thread
# hand-off costs more than that); longer ones in a thread, so a request of 1,024 texts of 10,000
# characters (cleaning alone: ~4 s) never stalls the loop.
_INLINE_TOKENIZE_CHARS = 2_000
# Estimated peak bytes per pixel while an image is decoded: the decoded mode (up to 4 bytes) plus
# the 8-bit RGB copy (4 bytes in PIL).
DECODE_BYTES_PER_PIXEL = 8


async def _tokenize(
    tokenizer: TextTokenizer, texts: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`encode_counting_unknown`, on the event loop only when short."""
    if sum(map(len, texts)) <= _INLINE_TOKENIZE_CHARS:
        return tokenizer.encode_counting_unknown(texts)
    return await asyncio.to_thread(tokenizer.encode_counting_unknown, texts)


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
    unknown: np.ndarray  # per text: tokens the model's vocabulary does not know

    @property
    def unknown_tokens(self) -> int:
        return int(self.unknown.sum())


class Embedder:
    def __init__(
        self,
        registry: Registry,
        policy: BatchPolicy,
        decode_pool: Executor,
        max_pending_decodes: int,
        deadline_s: float,
        decode_memory_bytes: int = 1 << 30,
    ) -> None:
        self.registry = registry
        self.deadline_s = deadline_s
        # texts go to the queue in chunks, so a request larger than the queue (a label set of
        # thousands of prompts) waits its turn instead of being refused every time
        self._text_chunk = min(
            policy.max_queue_items, max(policy.max_batch_size, policy.max_queue_items // 4)
        )
        self.batchers: dict[tuple[str, Tower], TowerBatcher] = {
            (name, tower): TowerBatcher(name, tower, runner, policy)
            for name, model in registry.models.items()
            for tower, runner in model.runners.items()
        }
        self._decode_pool = decode_pool
        self._decode_workers: int = getattr(decode_pool, "_max_workers", 1)
        # threads share one memory budget; a decode process holds one image at a time anyway
        self._decode_memory = (
            None
            if isinstance(decode_pool, ProcessPoolExecutor)
            else DecodeMemory(decode_memory_bytes)
        )
        self._pending_decodes = 0
        self._max_pending_decodes = max_pending_decodes

    def _replace_pool(self) -> Executor:
        broken = self._decode_pool
        broken.shutdown(wait=False, cancel_futures=True)
        workers = self._decode_workers
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
        """Tokenised and queued chunk by chunk, all of it under the request's one deadline."""
        batcher = self.batcher(model, "text")
        tokenizer = model.tokenizer
        assert tokenizer is not None  # a text tower always has one (checked at load)

        async def run() -> TextResult:
            vectors: list[np.ndarray] = []
            unknowns: list[np.ndarray] = []
            tokens = 0
            for chunk in self._text_chunks(texts):
                ids, mask, unknown = await _tokenize(tokenizer, chunk)
                if unknown.any():
                    metrics.UNKNOWN_TOKENS.labels(model=model.name).inc(int(unknown.sum()))
                feeds = {"input_ids": ids, "attention_mask": mask}
                vectors.append(await batcher.submit(feeds))
                unknowns.append(unknown)
                tokens += int(mask.sum())
            return TextResult(np.concatenate(vectors), tokens, np.concatenate(unknowns))

        return await self._timed(run())

    async def unknown_tokens(self, model: LoadedModel, texts: list[str]) -> int:
        """Tokens of these texts the model's vocabulary does not know (tokenised as for
        embedding, off the event loop when long; nothing is embedded)."""
        tokenizer = model.tokenizer
        if tokenizer is None:
            return 0
        total = 0
        for chunk in self._text_chunks(texts):
            total += int((await _tokenize(tokenizer, chunk))[2].sum())
        return total

    def _text_chunks(self, texts: list[str]) -> Iterator[list[str]]:
        for start in range(0, len(texts), self._text_chunk):
            yield texts[start : start + self._text_chunk]

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
        # A request keeps at most one decode per pool worker in the pool's queue: requests take
        # turns on the pool instead of one large request holding it for all its images.
        turn = asyncio.Semaphore(self._decode_workers)

        async def one(source: ImageSource) -> np.ndarray:
            try:
                async with turn:
                    pixels, seconds = await loop.run_in_executor(
                        self._decode_pool, decode_image, pre, source, self._decode_memory
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


def decode_image(
    pre: ImagePreprocessor, source: ImageSource, memory: DecodeMemory | None
) -> tuple[np.ndarray, float]:
    """Runs on the decode pool (threads or processes, so it is a module-level function; the
    model's own preprocessor goes along, pickled for a process, shared by threads)."""
    img = open_image(source_bytes(source), pre.limits)  # the header only: limits checked
    needs = pre.decoded_pixels(img) * DECODE_BYTES_PER_PIXEL
    with memory.hold(needs) if memory else nullcontext():
        started = time.perf_counter()  # waiting for memory is not decoding
        pixels = pre.pixels(img)
        seconds = time.perf_counter() - started
    limits = pre.limits
    if seconds > limits.max_decode_s:  # the pixel limit bounds the work; this bounds the time
        raise ImageError(
            "image_decode_too_slow",
            f"image took {seconds:.2f}s to decode, limit {limits.max_decode_s}s",
        )
    return pixels, seconds


class DecodeMemory:
    """Bytes of decoded pixels that decode threads may hold at once. A thread waits until its
    image fits; an image larger than the whole budget is refused. Bounds what any number of
    concurrent requests can make the decode pool allocate (a 7000x7000 16-bit PNG of 95 KB
    peaks at ~420 MB while it is decoded and converted)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._room = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        if nbytes > self.limit:
            raise ImageError(
                "image_too_large_to_decode",
                f"image needs about {nbytes >> 20} MiB to decode, limit {self.limit >> 20} MiB",
                413,
            )
        with self._room:
            self._room.wait_for(lambda: self._used + nbytes <= self.limit)
            self._used += nbytes
        try:
            yield
        finally:
            with self._room:
                self._used -= nbytes
                self._room.notify_all()


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
