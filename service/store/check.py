"""Start-up check of an embedded store: does each collection open, hold the points it held at
the last clean shutdown, and read back?

Damage (a truncated WAL, id tracker or segment file) otherwise goes unnoticed: a collection comes
back with 100 of 1,000 points, or listed but failing on every call. The counts a check can vouch
for live in `clipserve-state.json` in the engine's directory: every count at a clean shutdown,
and while the store runs only those of damaged collections (which refuse writes, so their
expected count stays true across a crash). A collection stays damaged until it is dropped,
reset or rebuilt (`clipserve store-check`) or its files come back whole.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from service.store.types import SYSTEM, Backend, ScrollQuery, SearchQuery, StoreUnavailable

log = logging.getLogger(__name__)
STATE_FILE = "clipserve-state.json"
SAMPLE = 256  # points read back (payload and vector) per collection


def engine_failure(exc: BaseException) -> bool:
    """An error raised by the engine, including a Rust panic (pyo3's PanicException derives
    from BaseException), but not an interrupt, an exit or a cancellation."""
    return not isinstance(exc, KeyboardInterrupt | SystemExit | asyncio.CancelledError)


@dataclass
class StoreState:
    """Counts we can vouch for, and whether the last shutdown was clean."""

    clean: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    found: bool = True  # False: no state file (a new store, or one from before this check)

    @classmethod
    def load(cls, root: Path) -> StoreState:
        try:
            data = json.loads((root / STATE_FILE).read_text())
            return cls(bool(data["clean"]), {str(k): int(v) for k, v in data["counts"].items()})
        except FileNotFoundError:
            return cls(found=False)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.error("ignoring unreadable %s: %s", root / STATE_FILE, exc)
            return cls()

    def save(self, root: Path) -> None:
        """Atomically (write, fsync, rename): a crash leaves the old file or the new one."""
        tmp = root / f".{STATE_FILE}.tmp"
        with tmp.open("w") as f:
            json.dump({"clean": self.clean, "counts": self.counts}, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(root / STATE_FILE)


def damaged_message(name: str, reason: str) -> str:
    what = "the system collection" if name == SYSTEM else f"collection {name!r}"
    return f"{what} is damaged: {reason} (see `clipserve store-check`)"


async def check_collection(backend: Backend, name: str, expected: int | None) -> str | None:
    """None if the collection opens, holds `expected` points (when known) and a sample of them
    reads back, payload and vector; else what is wrong. A search with the first vector reads
    every vector of an unindexed segment."""
    try:
        count = await backend.count(name)
    except StoreUnavailable:
        raise
    except BaseException as exc:
        if not engine_failure(exc):
            raise
        return f"it cannot be opened ({exc})"
    if expected is not None and count != expected:
        return f"it holds {count} points, {expected} at the last clean shutdown"
    try:
        page = await backend.scroll(name, ScrollQuery(limit=SAMPLE, with_vectors=True))
        if count and not page.points:
            return f"it counts {count} points but none can be read"
        ids = [p.id for p in page.points]
        back = await backend.retrieve(name, ids, True, True)
        if len(back) != len(ids) or any(p.vector is None for p in back):
            return f"{len(ids) - len(back)} of {len(ids)} sampled points do not read back whole"
        if back:
            await backend.query(name, SearchQuery(vector=list(back[0].vector or []), limit=1))
    except BaseException as exc:
        if not engine_failure(exc):
            raise
        return f"its points cannot be read back ({exc})"
    return None


async def check_store(backend: Backend, root: Path) -> tuple[dict[str, str], StoreState]:
    """Check every collection against the state file: ({name: reason} for the damaged ones,
    the state to keep while serving: the expected counts of the damaged ones)."""
    state = StoreState.load(root)
    damaged: dict[str, str] = {}
    for name in await backend.names():
        reason = await check_collection(backend, name, state.counts.get(name))
        if reason is not None:
            damaged[name] = reason
            log.error("%s", damaged_message(name, reason))
    if state.found and not state.clean:
        log.warning("the last shutdown of %s was not clean: counts were not compared", root)
    running = {n: c for n, c in state.counts.items() if n in damaged}
    return damaged, StoreState(False, running)


async def clean_state(backend: Backend, running: StoreState, damaged: dict[str, str]) -> StoreState:
    """The state to save at a clean shutdown: every healthy collection's count, and the
    expected counts of damaged ones carried over."""
    counts = dict(running.counts)
    for name in await backend.names():
        if name in damaged:
            continue
        try:
            counts[name] = await backend.count(name)
        except BaseException as exc:
            if not engine_failure(exc):
                raise
            log.error("cannot count %s at shutdown: %s", name, exc)
    return StoreState(True, counts)
