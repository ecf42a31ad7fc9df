"""Redis key layouts for sessions: the one ``RedisSessionStore`` writes, and leaner ones
measured beside it, each in a private ``redis-server`` so the figures are its own.

A layout says how one :class:`SessionRecord` becomes a hash (field names, which fields,
how values are written), what the session key is, and how the per-user index is kept
(a set, as the store does, or a hash of sid → ``""``). Only the first layout is what
tokenstile does today; the others are what a change to ``stores/redis.py`` would store.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.errors import BenchError
from bench.servers import free_port
from tokenstile.core.store import SessionRecord

Fields = dict[str, str]

# One or two letters per field, in SessionRecord's order.
SHORT_NAMES = {
    "sid": "s",
    "user_id": "u",
    "username": "n",
    "current_jti": "j",
    "current_iat": "i",
    "previous_jti": "p",
    "rotated_at": "r",
    "refresh_ttl": "t",
    "expires_at": "e",
    "max_expires_at": "m",
    "created_at": "c",
    "last_used_at": "l",
    "user_agent": "a",
    "ip": "ip",
    "client_id": "ci",
    "remember_me": "rm",
}
LISTPACK_VALUE = 64  # Redis's default hash-max-listpack-value, in bytes
TIME_FIELDS = ("rotated_at", "created_at", "last_used_at")


def current_fields(record: SessionRecord) -> Fields:
    """The hash ``RedisSessionStore`` writes: every field by name, ``None`` left out,
    floats by ``repr``, booleans as ``1``/``0``."""
    fields: Fields = {}
    for item in dataclasses.fields(record):
        value = getattr(record, item.name)
        if value is None:
            continue
        if isinstance(value, bool):
            fields[item.name] = "1" if value else "0"
        else:
            fields[item.name] = repr(value) if isinstance(value, float) else str(value)
    return fields


def cut_user_agent(record: SessionRecord, limit: int = LISTPACK_VALUE) -> SessionRecord:
    """``record`` with its user agent cut to ``limit`` UTF-8 bytes (whole characters)."""
    agent = record.user_agent
    if agent is None or len(agent.encode()) <= limit:
        return record
    cut = agent.encode()[:limit].decode(errors="ignore")
    return dataclasses.replace(record, user_agent=cut)


def _short(fields: Fields) -> Fields:
    return {SHORT_NAMES[name]: value for name, value in fields.items()}


def _lean(fields: Fields) -> Fields:
    """No ``sid`` (the key holds it), no default ``client_id``, no ``remember_me=0``."""
    lean = {k: v for k, v in fields.items() if k != "sid"}
    if lean.get("client_id") == "tokenstile":
        del lean["client_id"]
    if lean.get("remember_me") == "0":
        del lean["remember_me"]
    return lean


def _integer_times(fields: Fields) -> Fields:
    """Times in whole milliseconds: Redis keeps an integer-looking value as an integer."""
    return {
        name: str(round(float(value) * 1000)) if name in TIME_FIELDS else value
        for name, value in fields.items()
    }


def _digest(agent: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(agent.encode()).digest()[:6]).decode()


def _compact(record: SessionRecord, *, interned: bool = False) -> Fields:
    """Short names, no sid, defaults left out, integer times, agent cut to 64 bytes."""
    record = cut_user_agent(record)
    if interned and record.user_agent is not None:
        record = dataclasses.replace(record, user_agent=_digest(record.user_agent))
    return _short(_integer_times(_lean(current_fields(record))))


def _derived_dropped(fields: Fields) -> Fields:
    return {k: v for k, v in fields.items() if k not in ("i", "l")}


def _packed(record: SessionRecord) -> Fields:
    """One value per session: the compact fields but the user id, in a fixed order (an
    absent one empty), joined by US (0x1f)."""
    fields = _derived_dropped(_compact(record, interned=True))
    order = [name for name in SHORT_NAMES.values() if name not in ("s", "u", "i", "l")]
    return {"": "\x1f".join(fields.get(name, "") for name in order)}


def _interned_agent(record: SessionRecord) -> dict[str, str]:
    agent = record.user_agent
    return {} if agent is None else {f"ts:ua:{_digest(agent)}": agent}


@dataclass(frozen=True)
class Layout:
    name: str
    change: str
    """What ``stores/redis.py`` would do differently (empty for today's layout)."""
    encode: Callable[[SessionRecord], Fields]
    session_key: Callable[[str], str] = lambda sid: f"ts:{{{sid}}}:session"
    index: str = "set"  # or "hash"; "per-user": no session keys, the user's hash holds them
    config: dict[str, str] = field(default_factory=dict)
    shared: Callable[[SessionRecord], dict[str, str]] | None = None
    """Keys shared between sessions (written once each), such as interned agents."""


LAYOUTS = (
    Layout("today's layout", "", current_fields),
    Layout(
        "today's layout, server hash-max-listpack-value 512",
        "no code change: `hash-max-listpack-value 512` in redis.conf",
        current_fields,
        config={"hash-max-listpack-value": "512"},
    ),
    Layout(
        "user agent cut to 64 bytes",
        "`_encode` stores `user_agent` cut to 64 UTF-8 bytes",
        lambda r: current_fields(cut_user_agent(r)),
    ),
    Layout(
        "… and one- or two-letter field names",
        "field names as in `SHORT_NAMES` (Lua scripts and `_decode` too)",
        lambda r: _short(current_fields(cut_user_agent(r))),
    ),
    Layout(
        "… and no sid field, defaults left out",
        "drop `sid` (in the key), `client_id` when default, `remember_me` when false",
        lambda r: _short(_lean(current_fields(cut_user_agent(r)))),
    ),
    Layout(
        "… and times as integer milliseconds",
        "`rotated_at`, `created_at`, `last_used_at` as integer ms",
        lambda r: _short(_integer_times(_lean(current_fields(cut_user_agent(r))))),
    ),
    Layout(
        "… and the user index as a hash",
        "user index `HSET sid ''` instead of `SADD` (a listpack on Redis < 7.2)",
        _compact,
        index="hash",
    ),
    Layout(
        "… and the key `ts:{sid}`",
        "session key without the `:session` suffix",
        _compact,
        session_key=lambda sid: f"ts:{{{sid}}}",
        index="hash",
    ),
    Layout(
        "… and no derivable fields",
        "drop `current_iat` and `last_used_at`: both are `rotated_at` or `created_at`",
        lambda r: _derived_dropped(_compact(r)),
        session_key=lambda sid: f"ts:{{{sid}}}",
        index="hash",
    ),
    Layout(
        "… and the user agent interned",
        "`a` holds an 8-character digest; one `ts:ua:<digest>` string per distinct agent",
        lambda r: _derived_dropped(_compact(r, interned=True)),
        session_key=lambda sid: f"ts:{{{sid}}}",
        index="hash",
        shared=_interned_agent,
    ),
    Layout(
        "one hash per user: field sid, value the packed session",
        "sessions move into `ts:user:{<user_id>}` (the index itself); expiry by the Lua"
        " check and the purge, or HEXPIRE on Redis ≥ 7.4; values of ~150 B: hashtable",
        _packed,
        index="per-user",
        shared=_interned_agent,
    ),
    Layout(
        "… with server hash-max-listpack-value 256",
        "the same, and `hash-max-listpack-value 256` in redis.conf so it stays a listpack",
        _packed,
        index="per-user",
        shared=_interned_agent,
        config={"hash-max-listpack-value": "256"},
    ),
)


def write_layout(client: redis.Redis, layout: Layout, records: list[SessionRecord]) -> None:
    """Store ``records`` as ``layout`` says: hashes and indexes with their expiries."""
    batch = 500
    for start in range(0, len(records), batch):
        pipe = client.pipeline(transaction=False)
        for record in records[start : start + batch]:
            user_key = f"ts:user:{{{record.user_id}}}:sessions"
            if layout.index == "per-user":
                pipe.hset(user_key, record.sid, layout.encode(record)[""])
                pipe.expireat(user_key, record.max_expires_at, gt=True)
                pipe.expireat(user_key, record.max_expires_at, nx=True)
                for shared_key, value in (layout.shared(record) if layout.shared else {}).items():
                    pipe.set(shared_key, value, nx=True)
                continue
            key = layout.session_key(record.sid)
            pipe.hset(key, mapping=layout.encode(record))
            pipe.expireat(key, record.expires_at)
            if layout.index == "set":
                pipe.sadd(user_key, record.sid)
            else:
                pipe.hset(user_key, record.sid, "")
            pipe.expireat(user_key, record.max_expires_at)
            for shared_key, value in (layout.shared(record) if layout.shared else {}).items():
                pipe.set(shared_key, value, nx=True)
        pipe.execute()


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def key_usage(client: redis.Redis, match: str = "*") -> dict[str, dict[str, int]]:
    """``MEMORY USAGE`` (all samples) and ``OBJECT ENCODING`` of every key matching
    ``match``, summed by key type and encoding: ``{"hash/listpack": {"keys", "bytes"}}``."""
    totals: dict[str, dict[str, int]] = {}
    keys = list(client.scan_iter(match=match, count=1000))
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.type(key)
            pipe.object("encoding", key)
            pipe.memory_usage(key, samples=0)
        replies = pipe.execute()
        for i in range(len(chunk)):
            kind, encoding, size = replies[3 * i : 3 * i + 3]
            if size is None:
                continue  # expired meanwhile
            name = f"{_text(kind)}/{_text(encoding)}"
            entry = totals.setdefault(name, {"keys": 0, "bytes": 0})
            entry["keys"] += 1
            entry["bytes"] += int(size)
    return totals


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def private_redis() -> Iterator[tuple[str, redis.Redis]]:
    """A throwaway ``redis-server`` on a free loopback port, no persistence; stopped after."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server is not on PATH; the layout comparison needs one")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="tokenstile-redis-layouts-") as tmp:
        command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", tmp]
        log = (Path(tmp) / "redis.log").open("wb")
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        try:
            _wait_ready(client, process)
            yield url, client
        finally:
            client.close()
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()


def _wait_ready(client: redis.Redis, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError("the private redis-server exited at start")
        try:
            client.ping()
            return
        except redis.ConnectionError:
            time.sleep(0.05)
    raise BenchError("the private redis-server did not answer within 10 s")
