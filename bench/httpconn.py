"""One keep-alive HTTP/1.1 connection over asyncio streams, for the load
clients: a request costs a few tens of microseconds of client CPU here,
against several hundred with a general-purpose client, and the clients share
two cores with the controller they measure.

It speaks just what the controller's server answers: a status line, headers,
and a body framed by Content-Length or chunked transfer encoding.
"""

from __future__ import annotations

import asyncio
import time

IDLE_REOPEN_SECONDS = 4.0  # uvicorn drops keep-alive connections idle for 5 s


class HttpError(Exception):
    """The exchange failed below HTTP (connection refused, reset, bad framing)."""


class Connection:
    def __init__(self, host: str, port: int, token: str) -> None:
        self.host = host
        self.port = port
        self._auth = f"Authorization: Bearer {token}\r\n"
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_used = 0.0
        self.opened = 0

    def __repr__(self) -> str:  # never show the token
        return f"Connection({self.host}:{self.port})"

    async def _open(self) -> None:
        self.close()
        try:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except OSError as e:
            raise HttpError(f"connect: {type(e).__name__}") from None
        self.opened += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body). A reused connection the server closed while idle
        is reopened and the request sent again (it never reached the server)."""
        fresh = self._writer is None or time.monotonic() - self._last_used > IDLE_REOPEN_SECONDS
        if fresh:
            await self._open()
        try:
            return await self._exchange(method, path, body)
        except HttpError as e:
            if fresh or not str(e).startswith("closed before the answer"):
                self.close()
                raise
        await self._open()
        try:
            return await self._exchange(method, path, body)
        except HttpError:
            self.close()
            raise

    async def _exchange(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
        assert self._reader is not None and self._writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{self._auth}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self._writer.write((head + "\r\n").encode() + (body or b""))
        try:
            await self._writer.drain()
            raw = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as e:
            if not e.partial:
                raise HttpError("closed before the answer") from None
            raise HttpError("truncated answer head") from None
        except (ConnectionError, asyncio.LimitOverrunError) as e:
            raise HttpError(f"closed before the answer ({type(e).__name__})") from None
        lines = raw.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            raise HttpError("bad status line") from None
        headers = {}
        for line in lines[1:]:
            if line:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip().lower()
        try:
            if "content-length" in headers:
                data = await self._reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding") == "chunked":
                data = await self._chunked()
            else:
                data = b""
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            raise HttpError("truncated answer body") from None
        self._last_used = time.monotonic()
        if headers.get("connection") == "close":
            self.close()
        return status, data

    async def _chunked(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)
