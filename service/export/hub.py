"""The Hugging Face hub, seen from an export: is it reachable, and if not, work from the cache.

Offline, `huggingface_hub` retries every request with backoff (about two minutes of warnings
per export); one quick TCP connect answers the same question at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the hub (its endpoint as configured: HF_ENDPOINT)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout).close()
    except OSError:
        return False
    return True


@contextmanager
def cache_only() -> Iterator[None]:
    """Hub downloads fail at once (cached files still load): `huggingface_hub` reads its
    offline switch on every request. Libraries that log the failure before raising it are
    quietened meanwhile; the caller reports it in one line."""
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = offline
        logging.disable(logging.NOTSET)
