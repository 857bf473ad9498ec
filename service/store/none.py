"""`store_engine=none`: a server without a vector store, for embeddings and classification only.

Nothing is stored, so there is nothing to read: the system collection is empty and every user
collection or label set is unknown (404); any write answers 501 `store_disabled`. This is also
how a server that never stores anything skips the store process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NoReturn

import numpy as np

from service.store.types import (
    SYSTEM,
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
)


def _refuse() -> NoReturn:
    raise StoreError(
        501, "store_disabled", "this server runs without a vector store (store_engine=none)"
    )


class NoBackend:
    mode = "no"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def health(self) -> str | None:
        return None

    async def exists(self, name: str) -> bool:
        return name == SYSTEM

    async def dimension(self, name: str) -> int:
        return 1

    async def create(self, name: str, dim: int, opts: CollectionOptions) -> None:
        _refuse()

    async def drop(self, name: str) -> None:
        _refuse()

    async def index_payload(self, name: str, key: str, kind: IndexKind) -> None:
        _refuse()

    async def names(self) -> list[str]:
        return [SYSTEM]

    async def upsert(
        self,
        name: str,
        ids: Sequence[PointId],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any]],
    ) -> None:
        _refuse()

    async def retrieve(
        self, name: str, ids: Sequence[PointId], with_payload: bool, with_vectors: bool
    ) -> list[StoredPoint]:
        return []

    async def delete(self, name: str, ids: Sequence[PointId] | None, flt: Filter | None) -> None:
        _refuse()

    async def set_payload(
        self,
        name: str,
        ids: Sequence[PointId] | None,
        flt: Filter | None,
        payload: dict[str, Any],
        overwrite: bool,
    ) -> None:
        _refuse()

    async def delete_payload(
        self, name: str, ids: Sequence[PointId] | None, flt: Filter | None, keys: Sequence[str]
    ) -> None:
        _refuse()

    async def query(self, name: str, q: SearchQuery) -> list[Hit]:
        return []

    async def query_batch(self, name: str, qs: Sequence[SearchQuery]) -> list[list[Hit]]:
        return [[] for _ in qs]

    async def count(self, name: str, flt: Filter | None = None, exact: bool = True) -> int:
        return 0

    async def scroll(self, name: str, q: ScrollQuery) -> Page:
        return Page([], None)
