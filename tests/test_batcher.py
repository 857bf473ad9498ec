"""The dynamic batcher on a real onnxruntime tower: equal results, order, bounds, cancellation."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from service.batcher import BatchPolicy, QueueFull, TowerBatcher
from service.config import Settings
from service.imaging import ImageLimits
from service.registry import LoadedModel, load_model
from service.runners.base import RunnerError
from service.runners.factory import runner_factory


@pytest.fixture(scope="module")
def model(model_dir: Path) -> LoadedModel:
    return load_model(model_dir, runner_factory(Settings()), ImageLimits())


def text_feeds(model: LoadedModel, texts: list[str]) -> dict[str, np.ndarray]:
    assert model.tokenizer is not None
    ids, mask = model.tokenizer.encode(texts)
    return {"input_ids": ids, "attention_mask": mask}


def rows(feeds: dict[str, np.ndarray], start: int, end: int) -> dict[str, np.ndarray]:
    return {k: v[start:end] for k, v in feeds.items()}


TEXTS = [
    f"a photo of the number {w}"
    for w in ["zero", "one", "two", "three", "four", "five", "six", "seven"]
]


class CountingRunner:
    """The real tower runner, recording batch sizes and optionally holding batches back."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.runtime, self.provider = "onnxruntime", "CPUExecutionProvider"
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.gate.wait(10)
        self.sizes.append(len(next(iter(feeds.values()))))
        return self.inner.run(feeds)  # type: ignore[attr-defined, no-any-return]


def unbatched(model: LoadedModel, feeds: dict[str, np.ndarray]) -> np.ndarray:
    runner = model.runners["text"]
    n = len(feeds["input_ids"])
    return np.concatenate([runner.run(rows(feeds, i, i + 1)) for i in range(n)])


async def _with_batcher(runner: CountingRunner, policy: BatchPolicy, body):  # type: ignore[no-untyped-def]
    batcher = TowerBatcher("m", "text", runner, policy)  # type: ignore[arg-type]
    batcher.start()
    try:
        return await body(batcher)
    finally:
        await batcher.stop()


def test_concurrent_requests_share_batches_and_match_unbatched(model: LoadedModel) -> None:
    items = text_feeds(model, TEXTS)
    runner = CountingRunner(model.runners["text"])

    async def body(batcher: TowerBatcher) -> list[np.ndarray]:
        return await asyncio.gather(*(batcher.submit(rows(items, i, i + 1)) for i in range(8)))

    out = asyncio.run(_with_batcher(runner, BatchPolicy(max_batch_size=8, max_wait_s=0.05), body))
    assert max(runner.sizes) > 1
    np.testing.assert_allclose(np.concatenate(out), unbatched(model, items), atol=1e-5)


def test_large_request_is_split_and_reassembled_in_order(model: LoadedModel) -> None:
    items = text_feeds(model, TEXTS * 3)
    runner = CountingRunner(model.runners["text"])

    async def body(batcher: TowerBatcher) -> np.ndarray:
        return await batcher.submit(items)

    out = asyncio.run(_with_batcher(runner, BatchPolicy(max_batch_size=5, max_wait_s=0), body))
    assert runner.sizes == [5, 5, 5, 5, 4]
    np.testing.assert_allclose(out, unbatched(model, items), atol=1e-5)


def test_full_queue_refuses_at_once(model: LoadedModel) -> None:
    items = text_feeds(model, TEXTS)
    runner = CountingRunner(model.runners["text"])
    runner.gate.clear()  # the model is busy: nothing leaves the queue

    async def body(batcher: TowerBatcher) -> tuple[int, int]:
        first = asyncio.create_task(batcher.submit(rows(items, 0, 1)))
        await asyncio.sleep(0.05)  # the worker took it and is blocked in the runner
        waiting = asyncio.create_task(batcher.submit(rows(items, 0, 4)))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull) as full:
            await batcher.submit(rows(items, 0, 2))
        runner.gate.set()
        await asyncio.gather(first, waiting)
        return batcher.depth, full.value.retry_after_s

    policy = BatchPolicy(max_batch_size=4, max_wait_s=0, max_queue_items=5)
    depth, retry_after = asyncio.run(_with_batcher(runner, policy, body))
    assert depth == 0 and retry_after >= 1


def test_cancelled_request_frees_its_slots_and_never_runs(model: LoadedModel) -> None:
    items = text_feeds(model, TEXTS)
    runner = CountingRunner(model.runners["text"])
    runner.gate.clear()

    async def body(batcher: TowerBatcher) -> int:
        busy = asyncio.create_task(batcher.submit(rows(items, 0, 1)))
        await asyncio.sleep(0.05)
        doomed = asyncio.create_task(batcher.submit(rows(items, 1, 5)))
        await asyncio.sleep(0.01)
        assert batcher.depth == 4
        doomed.cancel()
        await asyncio.sleep(0.01)
        depth_after_cancel = batcher.depth
        runner.gate.set()
        await busy
        await batcher.submit(rows(items, 0, 2))
        return depth_after_cancel

    policy = BatchPolicy(max_batch_size=8, max_wait_s=0, max_queue_items=5)
    assert asyncio.run(_with_batcher(runner, policy, body)) == 0
    assert sum(runner.sizes) == 3  # the cancelled four never reached the model


def test_queue_depth_gauge_follows_the_queue(model: LoadedModel) -> None:
    """clipserve_queue_depth, the HPA's load signal for GPU pods (deploy/README), is the number of
    items waiting: up while the model is busy, back to 0 once they ran."""
    from prometheus_client import REGISTRY

    items = text_feeds(model, TEXTS)
    runner = CountingRunner(model.runners["text"])
    runner.gate.clear()
    labels = {"model": "queue-depth-gauge", "tower": "text"}

    def gauge() -> float | None:
        return REGISTRY.get_sample_value("clipserve_queue_depth", labels)

    async def body(batcher: TowerBatcher) -> list[float | None]:
        busy = asyncio.create_task(batcher.submit(rows(items, 0, 1)))
        await asyncio.sleep(0.05)  # the worker took it and is blocked in the runner
        waiting = asyncio.create_task(batcher.submit(rows(items, 1, 7)))
        await asyncio.sleep(0.01)
        seen = [gauge()]
        runner.gate.set()
        await asyncio.gather(busy, waiting)
        return [*seen, gauge()]

    async def run() -> list[float | None]:
        batcher = TowerBatcher(labels["model"], "text", runner, BatchPolicy(max_batch_size=8))  # type: ignore[arg-type]
        batcher.start()
        try:
            return await body(batcher)
        finally:
            await batcher.stop()

    assert asyncio.run(run()) == [6, 0]


def test_rows_of_several_requests_share_a_batch_and_come_back_in_order(
    model: LoadedModel,
) -> None:
    """A 7-row request and three single rows under a batch of 4: the large one is split, its
    tail shares a batch with the others, and every request gets exactly its own rows."""
    items = text_feeds(model, TEXTS + TEXTS[:2])
    runner = CountingRunner(model.runners["text"])
    runner.gate.clear()

    async def body(batcher: TowerBatcher) -> list[np.ndarray]:
        parts = [(0, 7), (7, 8), (8, 9), (9, 10)]
        tasks = [asyncio.create_task(batcher.submit(rows(items, a, b))) for a, b in parts]
        await asyncio.sleep(0.05)
        runner.gate.set()
        return list(await asyncio.gather(*tasks))

    out = asyncio.run(_with_batcher(runner, BatchPolicy(max_batch_size=4, max_wait_s=0), body))
    assert runner.sizes == [4, 4, 2]  # rows 0-3; rows 4-6 with the first single; the rest
    assert [len(o) for o in out] == [7, 1, 1, 1]
    np.testing.assert_allclose(np.concatenate(out), unbatched(model, items), atol=1e-5)


class FailingRunner(CountingRunner):
    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        self.sizes.append(len(next(iter(feeds.values()))))
        raise RuntimeError("device lost")


def test_failed_batch_fails_its_requests_and_drops_their_other_rows(model: LoadedModel) -> None:
    items = text_feeds(model, TEXTS)
    runner = FailingRunner(model.runners["text"])

    async def body(batcher: TowerBatcher) -> tuple[list[object], int]:
        results = await asyncio.gather(
            batcher.submit(rows(items, 0, 6)),
            batcher.submit(rows(items, 6, 7)),
            return_exceptions=True,
        )
        return list(results), batcher.depth

    policy = BatchPolicy(max_batch_size=4, max_wait_s=0)
    results, depth = asyncio.run(_with_batcher(runner, policy, body))
    assert all(isinstance(r, RunnerError) and "device lost" in str(r) for r in results)
    assert depth == 0 and runner.sizes == [4, 1]  # rows 4-5 of the failed request never ran
