"""Which backend a store runs on: in this process (tools, tests, a Qdrant server by URL) or, for
a serving process with an embedded engine, through the store process."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from service.store.facade import Store
from service.store.types import Backend

if TYPE_CHECKING:
    from service.config import Settings

Engine = Literal["edge", "local", "none"]


def embedded_backend(engine: str, data_dir: Path) -> tuple[Backend, Path]:
    """An embedded engine in this process, and the directory it keeps its files in."""
    if engine == "local":
        from service.store.client import ClientBackend

        root = Path(data_dir) / "qdrant"
        return ClientBackend(path=root), root
    from service.store.edge import EdgeBackend

    root = Path(data_dir) / "edge"
    return EdgeBackend(root), root


def open_store(engine: Engine, data_dir: Path, url: str | None, api_key: str | None) -> Store:
    """A store whose engine runs in this process: a server when `url` is set, else the
    embedded `engine` (or none). Offline tools use it; a server uses `serving_store`."""
    if engine == "none":
        from service.store.none import NoBackend

        return Store(NoBackend())
    if url:
        from service.store.client import ClientBackend

        return Store(ClientBackend(url=url, api_key=api_key))
    return Store(embedded_backend(engine, data_dir)[0])


def serving_store(settings: Settings) -> Store:
    """The store of a serving process. An embedded engine runs in the store process: the one
    this server's supervisor started (its address in the environment, `--workers N`), or one
    this process starts and owns."""
    if settings.store_engine == "none" or settings.qdrant_url:
        return open_store(
            settings.store_engine, settings.data_dir, settings.qdrant_url, settings.qdrant_api_key
        )
    from service.store.owner import StoreProcess
    from service.store.remote import RemoteBackend
    from service.store.wire import StoreAddress

    mode = "embedded" if settings.store_engine == "edge" else "local"
    address = StoreAddress.from_env()
    if address is not None:
        return Store(RemoteBackend(mode, settings.store_timeout_s, address=address))
    owner = StoreProcess.from_settings(settings)
    return Store(RemoteBackend(mode, settings.store_timeout_s, owner=owner))
