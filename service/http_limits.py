"""HTTP/1.1 connection limits that uvicorn's httptools protocol does not have.

httptools keeps an unfinished header line in memory, growing it copy by copy (a 100 MB header
line and two million headers were accepted), and uvicorn times out only idle keep-alive
connections: a connection that never sends a byte, or sends its head or body a byte at a time,
was held for as long as the client liked. This protocol bounds each request head (bytes and
header count: 431) and the time to receive it (`header_timeout_s`, counted from the connection's
start or, on a kept-alive connection, from the request's first byte) and its body
(`body_timeout_s`): 408 when part of a request arrived, a plain close when nothing did.
Refusals use the API's one JSON error shape and always close the connection.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.api.errors import ApiError, error_response

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0


class _Phase(enum.Enum):
    IDLE = 0  # between requests: no byte of the next one yet
    HEAD = 1  # request line and headers arriving
    BODY = 2  # headers done, body arriving


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the refusal itself is `_refusal`."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head size/count limits and head/body deadlines."""

    def __init__(self, *args: Any, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._phase = _Phase.IDLE
        self._head_bytes = 0  # bytes read since the head began, ended lines or not
        self._head_size = 0  # request line and ended header lines
        self._header_count = 0
        self._refusal: ApiError | None = None
        self._deadline: asyncio.TimerHandle | None = None

    # --- deadlines
    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._phase is _Phase.HEAD:
            limit = self.limits.header_timeout_s
            self._send_error(
                ApiError(408, "header_timeout", f"request headers did not arrive within {limit:g}s")
            )
        elif self._phase is _Phase.BODY:
            if self.cycle.response_started:  # answered without the body (a 404, say): just close
                self.transport.close()
                return
            self.cycle.disconnected = True  # the app's receive() ends, its late answer is dropped
            self.cycle.message_event.set()
            limit = self.limits.body_timeout_s
            self._send_error(
                ApiError(408, "body_timeout", f"request body did not arrive within {limit:g}s")
            )
        else:  # a connection that never sent a byte
            self.transport.close()

    def _send_error(self, error: ApiError) -> None:
        """Answer with the JSON error and close the connection."""
        self._disarm()
        log.info("refused a connection: %d %s", error.status, error.code)
        body = error_response(error).body
        head = [
            STATUS_LINE[error.status],
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + bytes(body))
        self.transport.close()

    # --- connection events
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._phase is not _Phase.BODY:  # a body's tail may share a read with the next head
            self._head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._phase is _Phase.HEAD and self._head_bytes > self.limits.max_header_bytes:
            self._send_error(self._too_large())  # a line that has not ended: httptools holds it

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:  # our callback stopped the parser
            self._send_error(self._refusal)
        else:
            super().send_400_response(msg)

    def _too_large(self) -> ApiError:
        limit = self.limits.max_header_bytes
        return ApiError(431, "headers_too_large", f"request line and headers exceed {limit} bytes")

    # --- parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _Phase.HEAD
        self._head_size = self._header_count = 0
        if self._deadline is None:  # kept alive: the head's time starts with its first byte
            self._arm(self.limits.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._head_size += len(name) + len(value) + 4  # ": " and CRLF
        if self._header_count > self.limits.max_headers:
            limit = self.limits.max_headers
            self._refusal = ApiError(431, "too_many_headers", f"more than {limit} request headers")
            raise _Refused
        if self._head_size > self.limits.max_header_bytes:
            self._refusal = self._too_large()
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._head_size > self.limits.max_header_bytes:  # a long request line
            self._refusal = self._too_large()
            raise _Refused
        self._phase = _Phase.BODY
        self._arm(self.limits.body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._phase = _Phase.IDLE
        self._head_bytes = 0
        self._disarm()  # until the next request's first byte (uvicorn times out idle ones)
