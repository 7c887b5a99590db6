"""How the service runs under uvicorn: a deadline for request heads, and an allocator that gives memory back.

uvicorn times out idle keep-alive connections but not a request head that never ends: a client that opens a connection,
or sends half a request line, and then waits would hold its connection forever. :func:`uvicorn_options` gives uvicorn an
HTTP protocol (its own h11 one) with a deadline for each head. (Bodies have their deadline in
:class:`fcnseg.serve.guards.BodyDeadline`.)
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

_HEAD_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: 35\r\n\r\nthe request head arrived too slowly"
)


class _HeadDeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol, with ``head_timeout`` seconds for each request head.

    The clock starts when the connection opens, and again at the first byte after each response; it stops when the head
    is complete. A connection that sent nothing is closed; one that sent part of a head gets 408, then is closed.
    """

    head_timeout: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_started = False
        self._head_timer: asyncio.TimerHandle | None = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def data_received(self, data: bytes) -> None:
        if self._between_requests():
            self._head_started = True
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)
        super().data_received(data)
        if not self._between_requests():  # the head is complete: the app has the request
            self._stop_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _stop_head_timer(self) -> None:
        self._head_started = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            if self._head_started:
                self.transport.write(_HEAD_TIMEOUT_RESPONSE)
            self.transport.close()


def head_deadline_protocol(head_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with a deadline of ``head_timeout`` seconds for each request head."""
    return type("HeadDeadlineProtocol", (_HeadDeadlineProtocol,), {"head_timeout": float(head_timeout)})


def uvicorn_options(app: Any) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config`` that enforce ``app.state.limits``' head deadline."""
    return {"http": head_deadline_protocol(app.state.limits.header_timeout_s)}


#: glibc's mallopt parameter number (malloc.h).
_M_MMAP_THRESHOLD = -3


def set_mmap_threshold(threshold_bytes: int) -> bool:
    """Have glibc map every allocation of ``threshold_bytes`` or more on its own (True when it was set).

    By default glibc raises its mmap threshold each time a large mapped block is freed (up to 32 MiB), so decoded images
    and activations of the sizes seen so far are then carved from the heap arenas (one per thread) and stay there when
    freed: under images of many sizes the resident memory creeps up. A fixed threshold keeps every big buffer mapped,
    and returned to the system when freed (``benchmarks/serve_memory.py`` measures it). Does nothing off glibc or when
    ``MALLOC_MMAP_THRESHOLD_`` is set (the environment's choice wins).
    """
    if threshold_bytes <= 0 or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(threshold_bytes)))
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False
