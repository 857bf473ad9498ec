"""The `Backend` of an API process whose embedded engine runs in the store process: every call
crosses the Unix socket (`wire.py`) and has a deadline.

One connection per process carries every call at once (ids match replies to callers). A call
that misses its deadline answers 504 and is abandoned (the owner restarts a store process that
stays stuck); a call that loses its connection answers 503, and the next one reconnects.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from service.store.owner import StoreProcess
from service.store.types import (
    CollectionOptions,
    Filter,
    Hit,
    IndexKind,
    Page,
    PointId,
    ScrollQuery,
    SearchQuery,
    StoredPoint,
    StoreError,
    StoreUnavailable,
)
from service.store.wire import StoreAddress, decode, encode, raw_frame, read_frame

log = logging.getLogger(__name__)
_CONNECT_TIMEOUT_S = 2.0


def _gone(why: str) -> StoreError:
    return StoreError(503, "store_unavailable", f"the store process {why}; retry shortly")


class RemoteBackend:
    def __init__(
        self,
        mode: str,
        timeout_s: float,
        *,
        address: StoreAddress | None = None,
        owner: StoreProcess | None = None,
    ) -> None:
        self.mode, self.timeout_s, self.owner = mode, timeout_s, owner
        self.address = address or (owner.address if owner else None)
        if self.address is None:
            raise ValueError("a remote store needs an address or an owner")
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting = asyncio.Lock()

    # --- connection ---------------------------------------------------------------------------
    async def _connection(self) -> asyncio.StreamWriter:
        async with self._connecting:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
            assert self.address is not None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(self.address.path), _CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError) as exc:
                raise _gone(f"cannot be reached ({exc.__class__.__name__})") from None
            writer.write(raw_frame(self.address.secret))
            self._writer = writer
            self._reader_task = asyncio.create_task(self._read_replies(reader, writer))
            return writer

    async def _read_replies(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                call_id, ok, value = decode(await read_frame(reader))
                future = self._pending.pop(call_id, None)
                if future is None or future.done():
                    continue  # its caller gave up at the deadline
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            if self._writer is writer:
                self._writer = None
            pending, self._pending = self._pending, {}
            for future in pending.values():
                if not future.done():
                    future.set_exception(_gone("went away during the call (restarting)"))

    async def _call(self, method: str, *args: Any, timeout_s: float | None = None) -> Any:
        writer = await self._connection()
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        limit = timeout_s or self.timeout_s
        try:
            writer.write(encode((call_id, method, args)))
            await writer.drain()
            return await asyncio.wait_for(future, limit)
        except TimeoutError:
            log.warning("store call %s abandoned after %g s", method, limit)
            raise StoreError(
                504,
                "store_timeout",
                f"the store did not answer within {limit:g} s (store_timeout_s); "
                "a store process that stays stuck is restarted",
            ) from None
        except ConnectionError:
            raise _gone("went away during the call (restarting)") from None
        finally:
            self._pending.pop(call_id, None)

    # --- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        if self.owner is not None:
            try:
                await asyncio.to_thread(self.owner.start)
            except StoreUnavailable:
                await asyncio.to_thread(self.owner.stop)
                raise

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            await asyncio.gather(self._reader_task, return_exceptions=True)
        if self.owner is not None:
            await asyncio.to_thread(self.owner.stop)

    async def health(self) -> str | None:
        if self.owner is not None and self.owner.problem is not None:
            return self.owner.problem
        result: str | None = await self._call("health", timeout_s=min(self.timeout_s, 2.0))
        return result

    # --- the Backend calls --------------------------------------------------------------------
    async def exists(self, name: str) -> bool:
        return bool(await self._call("exists", name))

    async def dimension(self, name: str) -> int:
        return int(await self._call("dimension", name))

    async def create(self, name: str, dim: int, opts: CollectionOptions) -> None:
        await self._call("create", name, dim, opts)

    async def drop(self, name: str) -> None:
        await self._call("drop", name)

    async def index_payload(self, name: str, key: str, kind: IndexKind) -> None:
        await self._call("index_payload", name, key, kind)

    async def names(self) -> list[str]:
        return list(await self._call("names"))

    async def upsert(
        self,
        name: str,
        ids: Sequence[PointId],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any]],
    ) -> None:
        await self._call("upsert", name, list(ids), vectors, list(payloads))

    async def retrieve(
        self, name: str, ids: Sequence[PointId], with_payload: bool, with_vectors: bool
    ) -> list[StoredPoint]:
        return list(await self._call("retrieve", name, list(ids), with_payload, with_vectors))

    async def delete(self, name: str, ids: Sequence[PointId] | None, flt: Filter | None) -> None:
        await self._call("delete", name, None if ids is None else list(ids), flt)

    async def set_payload(
        self,
        name: str,
        ids: Sequence[PointId] | None,
        flt: Filter | None,
        payload: dict[str, Any],
        overwrite: bool,
    ) -> None:
        await self._call(
            "set_payload", name, None if ids is None else list(ids), flt, payload, overwrite
        )

    async def delete_payload(
        self, name: str, ids: Sequence[PointId] | None, flt: Filter | None, keys: Sequence[str]
    ) -> None:
        await self._call(
            "delete_payload", name, None if ids is None else list(ids), flt, list(keys)
        )

    async def query(self, name: str, q: SearchQuery) -> list[Hit]:
        return list(await self._call("query", name, q))

    async def query_batch(self, name: str, qs: Sequence[SearchQuery]) -> list[list[Hit]]:
        return list(await self._call("query_batch", name, list(qs)))

    async def count(self, name: str, flt: Filter | None = None, exact: bool = True) -> int:
        return int(await self._call("count", name, flt, exact))

    async def scroll(self, name: str, q: ScrollQuery) -> Page:
        page: Page = await self._call("scroll", name, q)
        return page
