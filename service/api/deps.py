"""Request-scoped dependencies: the process state, the model a request names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import httpx
from fastapi import Depends, Request

from service.classify import TextCache
from service.config import Settings
from service.embedder import Embedder
from service.inputs import ImageSourcePolicy
from service.registry import Registry
from service.store.facade import Store


@dataclass
class AppState:
    settings: Settings
    registry: Registry
    embedder: Embedder
    image_sources: ImageSourcePolicy
    http: httpx.AsyncClient
    store: Store
    text_cache: TextCache = field(default_factory=TextCache)
    ready: bool = False
    extras: dict[str, object] = field(default_factory=dict)


async def get_state(request: Request) -> AppState:
    """Async on purpose: FastAPI runs a plain `def` dependency in its thread pool, a thread
    hand-off per request (11% of the event loop's time under image load, by py-spy)."""
    state: AppState = request.app.state.clipserve
    return state


State = Annotated[AppState, Depends(get_state)]
