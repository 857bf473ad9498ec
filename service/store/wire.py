"""The store process's protocol: length-prefixed frames over a Unix socket.

The first frame a client sends is the shared secret (compared in constant time; nothing is
unpickled before it matches). After it, each request is `pickle((call_id, method, args))` and
each reply `pickle((call_id, ok, value))`, where `value` is the result or a `StoreError`.
Pickle, because the records are dataclasses, vectors numpy arrays (1 ms for 1024 x 512 instead
of 130 ms as lists) and a filter is whatever pydantic model the API parsed, translated to the
engine's filter only inside the engine. Only processes of the same server speak it: the socket
sits in a directory only its user can enter, and the secret travels in the environment.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import pickle
import socket
import struct
from dataclasses import dataclass
from typing import Any

_HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 30
SOCKET_ENV = "CLIPSERVE_STORE_SOCKET"
SECRET_ENV = "CLIPSERVE_STORE_SECRET"


@dataclass(frozen=True)
class StoreAddress:
    """Where a store process listens and the secret it asks for."""

    path: str
    secret: bytes

    def export(self) -> dict[str, str]:
        """As environment variables (how API worker processes find it)."""
        return {SOCKET_ENV: self.path, SECRET_ENV: self.secret.hex()}

    @classmethod
    def from_env(cls) -> StoreAddress | None:
        path, secret = os.environ.get(SOCKET_ENV), os.environ.get(SECRET_ENV)
        return cls(path, bytes.fromhex(secret)) if path and secret else None


def encode(message: Any) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def decode(data: bytes) -> Any:
    return pickle.loads(data)


def secret_matches(sent: bytes, secret: bytes) -> bool:
    return hmac.compare_digest(sent, secret)


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
    if size > MAX_FRAME:
        raise ConnectionError(f"store frame of {size} bytes is over the {MAX_FRAME} limit")
    return await reader.readexactly(size)


def raw_frame(data: bytes) -> bytes:
    return _HEADER.pack(len(data)) + data


class BlockingClient:
    """A synchronous connection (the supervisor's pings, from a plain thread)."""

    def __init__(self, address: StoreAddress, timeout_s: float) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout_s)
        self._sock.connect(address.path)
        self._sock.sendall(raw_frame(address.secret))
        self._next = 0

    def call(self, method: str, *args: Any) -> Any:
        """Raises TimeoutError (socket timeout) when the store process does not answer."""
        self._next += 1
        self._sock.sendall(encode((self._next, method, args)))
        while True:
            call_id, ok, value = decode(self._recv_frame())
            if call_id == self._next:
                if not ok:
                    raise value
                return value

    def _recv_frame(self) -> bytes:
        (size,) = _HEADER.unpack(self._recv(_HEADER.size))
        return self._recv(size)

    def _recv(self, n: int) -> bytes:
        chunks, left = [], n
        while left:
            chunk = self._sock.recv(left)
            if not chunk:
                raise ConnectionError("the store process closed the connection")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self._sock.close()
