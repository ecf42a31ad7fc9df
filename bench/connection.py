"""A minimal HTTP/1.1 keep-alive client: prebuilt request bytes, one connection each."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson

from bench.errors import MalformedResponse

HOST = "127.0.0.1"


@dataclass(slots=True)
class Response:
    status: int
    body: bytes


def build_request(
    port: int, method: str, path: str, *, body: bytes | None = None, token: str | None = None
) -> bytes:
    """The raw bytes of one request (JSON body when ``body`` is given)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + (body or b"")


def post_json(port: int, path: str, payload: dict[str, str]) -> bytes:
    return build_request(port, "POST", path, body=orjson.dumps(payload))


def parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """Status, Content-Length, chunked, keep-alive from a response head."""
    if not head.startswith(b"HTTP/1."):
        raise MalformedResponse(f"not an HTTP/1.x response: {head[:40]!r}")
    status = int(head[9:12])
    headers = head.lower()
    length = None
    start = headers.find(b"\r\ncontent-length:")
    if start >= 0:
        end = headers.index(b"\r\n", start + 2)
        length = int(headers[start + len(b"\r\ncontent-length:") : end])
    chunked = b"\r\ntransfer-encoding: chunked" in headers
    keep_alive = b"\r\nconnection: close" not in headers
    return status, length, chunked, keep_alive


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailer fields
            return b"".join(parts)
        parts.append((await reader.readexactly(size + 2))[:-2])


class HttpConnection:
    """One persistent connection to the server, opened lazily, reopened after errors."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def send(self, request: bytes) -> Response:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(HOST, self._port)
        reader = self._reader
        self._writer.write(request)
        status, length, chunked, keep_alive = parse_head(await reader.readuntil(b"\r\n\r\n"))
        if length is not None:
            body = await reader.readexactly(length)
        elif chunked:
            body = await read_chunked(reader)
        else:
            body, keep_alive = b"", False
        if not keep_alive:
            self.close()
        return Response(status, body)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
