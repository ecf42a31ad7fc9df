"""`MAX_BODY_BYTES` and `BODY_TIMEOUT`: request bodies are bounded while they arrive.

Raw sockets show what a client library would hide: whether the answer comes before
the body was sent, and whether a stalled body holds the connection.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from tests.accounts import PASSWORD, register
from tests.api.conftest import make_settings
from tests.servers import LiveServer
from tokenstile.api import Tokenstile

LIMIT = 65_536  # the default
ONE_MB = 1_000_000
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def store_mode() -> str:
    """Body limits sit in front of every store: SQLite suffices."""
    return "sqlite"


def connect(server: LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def head(path: str, content_type: str, **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {content_type}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the answer, read until the server closes."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65_536)
        except ConnectionResetError:  # the server closed with our unread bytes queued
            break
        if not chunk:
            break
        data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    header_block, _, body = rest.partition(b"\r\n\r\n")
    headers = {}
    for line in header_block.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def login_body(username: str, size: int) -> bytes:
    """A valid login of exactly ``size`` bytes: the schema ignores the padding field."""
    body = {"username": username, "password": PASSWORD, "padding": ""}
    empty = len(json.dumps(body).encode())
    body["padding"] = "x" * (size - empty)
    encoded = json.dumps(body).encode()
    assert len(encoded) == size
    return encoded


def pieces(data: bytes, size: int = 8192) -> Iterator[bytes]:
    """The body as an iterator, which httpx sends chunked, without a Content-Length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize(("path", "content_type"), [("/auth/login", JSON), ("/auth/token", FORM)])
def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(
    server: LiveServer, path: str, content_type: str
) -> None:
    with connect(server) as sock:
        sock.sendall(head(path, content_type, Content_Length=str(ONE_MB)))  # and no body

        status, headers, body = read_response(sock)

    assert status == 413
    assert json.loads(body)["error"] == "invalid_request"
    assert headers["connection"] == "close"


@pytest.mark.parametrize(("path", "content_type"), [("/auth/login", JSON), ("/auth/token", FORM)])
def test_a_chunked_body_over_the_limit_is_cut_off_while_it_is_sent(
    server: LiveServer, path: str, content_type: str
) -> None:
    piece = b"x" * 16_384
    sent = 0
    with connect(server) as sock:
        sock.sendall(head(path, content_type, Transfer_Encoding="chunked"))
        while sent < ONE_MB:
            try:
                sock.sendall(chunk(piece))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
            if select.select([sock], [], [], 0.05)[0]:
                break  # answered while we still had data to send
        assert sent < ONE_MB, "the server read the whole body before answering"

        status, _headers, body = read_response(sock)

    assert sent <= LIMIT + len(piece) * 4  # uvicorn buffers at most 64 KiB ahead
    assert status == 413
    assert json.loads(body)["error"] == "invalid_request"


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_a_body_exactly_at_the_limit_is_accepted_and_one_byte_more_is_not(
    server: LiveServer, chunked: bool
) -> None:
    username = register(server.client)
    at_limit = login_body(username, LIMIT)
    over = login_body(username, LIMIT + 1)

    def post(body: bytes) -> httpx.Response:
        content = pieces(body) if chunked else body
        return server.client.post("/auth/login", content=content, headers={"content-type": JSON})

    accepted = post(at_limit)
    refused = post(over)

    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["access_token"]
    assert refused.status_code == 413
    assert refused.json()["error"] == "invalid_request"


def test_a_stalled_body_is_answered_within_the_body_timeout(
    serve: Callable[..., LiveServer],
) -> None:
    server = serve(body_timeout=1)
    with connect(server) as sock:
        sock.sendall(head("/auth/login", JSON, Content_Length="100") + b'{"username"')
        started = time.monotonic()

        status, _headers, body = read_response(sock)  # returns once the server closes

    assert time.monotonic() - started < 5
    assert status == 408
    assert json.loads(body)["error"] == "invalid_request"


def test_a_trickled_body_is_cut_off_at_the_body_timeout(serve: Callable[..., LiveServer]) -> None:
    # Each byte comes well within the timeout; the whole body does not.
    server = serve(body_timeout=1)
    with connect(server) as sock:
        sock.sendall(head("/auth/login", JSON, Content_Length="1000"))
        started = time.monotonic()
        while time.monotonic() - started < 5:
            sock.sendall(b" ")
            if select.select([sock], [], [], 0.2)[0]:
                break

        status, _headers, _body = read_response(sock)

    assert time.monotonic() - started < 3
    assert status == 408


def test_max_body_bytes_is_read(serve: Callable[..., LiveServer]) -> None:
    server = serve(max_body_bytes=100)
    username = register(server.client)

    response = server.client.post(
        "/auth/login", content=login_body(username, 101), headers={"content-type": JSON}
    )

    assert response.status_code == 413


def test_the_library_bounds_its_own_routes_and_not_the_apps(
    store_settings: dict[str, str],
) -> None:
    auth = Tokenstile(make_settings(store_settings))
    app = FastAPI(lifespan=auth.lifespan)
    auth.install(app)

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, Any]:
        return {"size": len(await request.body())}

    server = LiveServer(app).start()
    try:
        username = register(server.client)
        big = login_body(username, 4 * LIMIT)

        upload_answer = server.client.post("/upload", content=big)
        login_answer = server.client.post(
            "/auth/login", content=big, headers={"content-type": JSON}
        )
    finally:
        server.stop()

    assert upload_answer.json() == {"size": 4 * LIMIT}
    assert login_answer.status_code == 413
    assert login_answer.json()["error"] == "invalid_request"
