"""ASGI middleware that keeps one client from holding the service: size, slots, deadline, key.

Each class wraps the app below it and answers with JSON ``{"detail": message}`` before the endpoint runs (or, for a body
that breaks a limit while it is read, raises the ``HTTPException`` that FastAPI turns into that answer).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from fastapi import HTTPException
from fastapi.responses import JSONResponse

Receive = Callable[[], Awaitable[dict]]
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _header(scope: dict, name: bytes) -> bytes:
    return dict(scope.get("headers", [])).get(name, b"")


class UploadSizeLimit:
    """A request body over the limit gets 413 before it is read in full.

    A declared ``Content-Length`` over the limit is refused at once; a body sent without one (chunked) is counted as it
    arrives and refused once it passes the limit.
    """

    def __init__(self, app: Any, max_body_bytes: int, message: str) -> None:
        self.app, self.max_body_bytes, self.message = app, max_body_bytes, message

    async def __call__(self, scope: dict, receive: Receive, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await JSONResponse({"detail": self.message}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(status_code=413, detail=self.message)
            return message

        await self.app(scope, counted_receive, send)


class UploadQueue:
    """``slots`` upload slots and the requests waiting for one (shared by :class:`UploadSlots` and ``/health``)."""

    def __init__(self, slots: int, queue_timeout: float) -> None:
        self.slots, self.queue_timeout = slots, queue_timeout
        self.in_progress = self.waiting = 0
        self._free = anyio.Semaphore(slots)

    async def enter(self) -> bool:
        """Wait up to ``queue_timeout`` seconds for a free slot; True when one was taken (:meth:`leave` frees it)."""
        self.waiting += 1
        try:
            with anyio.move_on_after(self.queue_timeout):
                await self._free.acquire()
                self.in_progress += 1
                return True
            return False
        finally:
            self.waiting -= 1

    def leave(self) -> None:
        self.in_progress -= 1
        self._free.release()


class UploadSlots:
    """At most ``queue.slots`` requests with a body are read and processed at once.

    The others wait in line *before* their body is read (each costs the server only its connection meanwhile); one that
    waits longer than the queue timeout gets 503 with ``Retry-After``.
    """

    def __init__(self, app: Any, queue: UploadQueue, retry_after: int = 5) -> None:
        self.app, self.queue, self.retry_after = app, queue, retry_after

    async def __call__(self, scope: dict, receive: Receive, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        if not await self.queue.enter():
            message = (
                f"the server is busy: {self.queue.slots} uploads are being processed and this one waited "
                f"{self.queue.queue_timeout:g} s for a turn; retry in {self.retry_after} s"
            )
            response = JSONResponse(
                {"detail": message}, status_code=503, headers={"Retry-After": str(self.retry_after)}
            )
            await response(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.queue.leave()


class BodyDeadline:
    """The whole request body must arrive within ``timeout`` seconds of the first read, or 408.

    The deadline covers the whole body (not each read), so a client that trickles a byte now and then is cut off as
    surely as one that stops. The 408 carries ``Connection: close``: the server drops the connection rather than read
    what the client may still send.
    """

    def __init__(self, app: Any, timeout: float) -> None:
        self.app, self.timeout = app, timeout

    async def __call__(self, scope: dict, receive: Receive, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline: float | None = None

        async def timed_receive() -> dict:
            nonlocal deadline
            deadline = deadline or anyio.current_time() + self.timeout
            try:
                with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                    return await receive()
            except TimeoutError:
                raise HTTPException(
                    status_code=408,
                    detail=f"the request body did not arrive within {self.timeout:g} s; "
                    "send it faster or in a smaller file",
                    headers={"Connection": "close"},
                ) from None

        await self.app(scope, timed_receive, send)


class ApiKeyCheck:
    """Requests must carry the key, as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; else 401.

    ``open_paths`` (the health check, the page) need no key.
    """

    def __init__(self, app: Any, key: str, open_paths: frozenset[str]) -> None:
        self.app, self.key, self.open_paths = app, key.encode(), open_paths

    def accepts(self, scope: dict) -> bool:
        bearer = _header(scope, b"authorization")
        given = bearer[7:].strip() if bearer[:7].lower() == b"bearer " else _header(scope, b"x-api-key")
        return hmac.compare_digest(given, self.key)  # constant time: the comparison leaks nothing

    async def __call__(self, scope: dict, receive: Receive, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths or self.accepts(scope):
            await self.app(scope, receive, send)
            return
        detail = "this service needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
        if _header(scope, b"authorization") or _header(scope, b"x-api-key"):
            detail = "the API key is wrong"
        await JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})(
            scope, receive, send
        )
