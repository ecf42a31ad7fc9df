"""Virtual users chaining refreshes against a live ``tokenstile serve`` while a fault
happens, and what they saw: status counts, revoked tokens accepted, sessions lost, and
the time to recover once the fault ended.

Each user logs in once, then loops: refresh (body transport), ``GET /users/me`` with the
new access token, now and then a logout (and a new login), so that revoked tokens exist;
those are probed during and after the fault, and any 2xx on one is a revoked token
accepted.

What is ambiguous is handled as a careful client does (SPEC §1 invariant 9): a refresh
answered 503, 429 or not answered at all (a dropped connection) may or may not have
rotated on the server, so the user keeps the token it had and presents it again; the
server either rotates it or, if the lost answer had rotated it, returns the same child
inside ``REFRESH_GRACE``. A logout without a 2xx is retried until it answers 204, or 401
``token_revoked`` (the lost answer had ended the session). A session is *lost* when the
token a user holds is refused although that user never logged it out.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

PASSWORD = "correct horse battery"
ALLOWED_STATUSES = frozenset({401, 429, 503})
"""Besides 2xx, the only answers a fault may cause (SPEC §1 invariant 8: 503)."""
OPERATIONS = ("login", "refresh", "users_me", "logout")
LOGOUT_CHANCE = 0.04
PROBE_CHANCE = 0.15
RETRY_PAUSE = 0.05
REQUEST_TIMEOUT = 5.0
FINAL_CHECK_SECONDS = 10.0
FINAL_PROBES_PER_USER = 5
QUIET_SECONDS = 1.0
"""Recovery is confirmed once every request for this long after the last failure succeeded."""


@dataclass(slots=True)
class Call:
    """One request of the load: what, when (monotonic seconds), and how it ended."""

    operation: str
    start: float
    end: float
    status: int | None  # None: no HTTP answer (connection dropped, timeout)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Session:
    access_token: str
    refresh_token: str
    logout_pending: bool = False
    unanswered_refreshes: int = 0
    """Refreshes of this session that got no HTTP answer (for the lost-session report)."""


@dataclass
class VirtualUser:
    username: str
    session: Session | None = None
    revoked: list[tuple[str, str]] = field(default_factory=list)
    """(access token, refresh token) of sessions this user's own logout ended."""


@dataclass
class FaultReport:
    """What a run saw; ``failures()`` lists the broken promises in one line each."""

    scenario: str
    users: int
    duration_s: float
    fault_started: float
    fault_in_effect: float
    """When ``begin()`` had returned: the fault holds from then until ``fault_lifted``."""
    fault_lifted: float
    """When ``end()`` was called."""
    fault_ended: float
    """When ``end()`` had returned (the store is back): recovery counts from here."""
    calls: list[Call]
    bad_statuses: Counter[int]
    bad_samples: list[str]
    revoked_accepted: int
    revoked_probes: int
    lost_sessions: int
    lost_details: list[str]
    crossed_sessions: int
    """Refreshes answered with tokens of another session than the presented token's."""
    recovery_s: float | None
    checked_sessions: int

    def statuses(self, *, since: float | None = None, until: float | None = None) -> Counter[str]:
        """``operation status`` counts (``refresh dropped`` for no answer) of the calls
        that started in [since, until)."""
        counts: Counter[str] = Counter()
        for call in self._between(since, until):
            outcome = call.status if call.status is not None else "dropped"
            counts[f"{call.operation} {outcome}"] += 1
        return counts

    def failed(self, operation: str, *, since: float, until: float) -> int:
        return sum(
            1 for call in self._between(since, until) if call.operation == operation and not call.ok
        )

    def succeeded(self, operation: str, *, since: float, until: float) -> int:
        return sum(
            1 for call in self._between(since, until) if call.operation == operation and call.ok
        )

    @property
    def throughput_rps(self) -> float:
        return len(self.calls) / self.duration_s if self.duration_s else 0.0

    def latency_ms(self, fraction: float) -> float:
        durations = sorted(call.end - call.start for call in self.calls)
        if not durations:
            return 0.0
        index = min(len(durations) - 1, round(fraction * (len(durations) - 1)))
        return durations[index] * 1000

    def summary(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "users": self.users,
            "bad_statuses": sum(self.bad_statuses.values()),
            "revoked_accepted": self.revoked_accepted,
            "revoked_probes": self.revoked_probes,
            "lost_sessions": self.lost_sessions,
            "crossed_sessions": self.crossed_sessions,
            "checked_sessions": self.checked_sessions,
            "recovery_s": None if self.recovery_s is None else round(self.recovery_s, 3),
            "requests": len(self.calls),
            "throughput_rps": round(self.throughput_rps, 1),
            "p50_ms": round(self.latency_ms(0.5), 2),
            "p99_ms": round(self.latency_ms(0.99), 2),
            "statuses": dict(sorted(self.statuses().items())),
        }

    def failures(self, *, max_recovery_s: float) -> list[str]:
        """Every broken promise of the run; empty when all four counts hold."""
        problems = []
        if self.bad_statuses:
            problems.append(
                f"{sum(self.bad_statuses.values())} responses other than 2xx/401/429/503: "
                f"{dict(self.bad_statuses)} e.g. {self.bad_samples[:3]}"
            )
        if self.revoked_accepted:
            problems.append(
                f"{self.revoked_accepted} of {self.revoked_probes} probes of revoked tokens "
                "were accepted"
            )
        if self.lost_sessions:
            problems.append(
                f"{self.lost_sessions} sessions lost of {self.checked_sessions}: "
                f"{self.lost_details[:5]}"
            )
        if self.crossed_sessions:
            problems.append(
                f"{self.crossed_sessions} refreshes answered with another session's tokens"
            )
        if self.recovery_s is None:
            problems.append("the service did not recover after the fault ended")
        elif self.recovery_s > max_recovery_s:
            problems.append(f"recovery took {self.recovery_s:.2f} s > {max_recovery_s} s")
        return problems

    def _between(self, since: float | None, until: float | None) -> list[Call]:
        return [
            call
            for call in self.calls
            if (since is None or call.start >= since) and (until is None or call.start < until)
        ]


class FaultLoad:
    """``users`` virtual users on ``base_url``; ``register()`` once, then ``run()`` per fault."""

    def __init__(self, base_url: str, users: int) -> None:
        self.base_url = base_url
        self.users = [VirtualUser(f"fault-{random.getrandbits(40):x}-{i}") for i in range(users)]
        self.calls: list[Call] = []
        self._bad: Counter[int] = Counter()
        self._bad_samples: list[str] = []
        self._revoked_accepted = 0
        self._revoked_probes = 0
        self._lost: list[str] = []
        self._crossed = 0
        self._stop = asyncio.Event()

    async def register(self) -> None:
        """Create every user's account (once per deployment)."""
        async with self._client() as client:
            for user in self.users:
                response = await client.post(
                    "/auth/register", json={"username": user.username, "password": PASSWORD}
                )
                if response.status_code != 201:
                    raise RuntimeError(f"register failed: {response.status_code} {response.text}")

    async def run(
        self,
        scenario: str,
        *,
        begin: Callable[[], object],
        end: Callable[[], object],
        before: float,
        during: float,
        max_after: float,
    ) -> FaultReport:
        """Load for ``before`` s, ``begin()`` the fault, ``during`` s later ``end()`` it
        (both run in a thread: they may block), then go on until the service has served
        only successes for ``QUIET_SECONDS`` (at most ``max_after`` s), stop, and check
        every session and every revoked token."""
        self._reset()
        for user in self.users:  # each run starts from fresh logins
            user.session = None
        started = time.monotonic()
        clients = [self._client() for _ in self.users]
        tasks = [
            asyncio.create_task(self._loop(user, client))
            for user, client in zip(self.users, clients, strict=True)
        ]
        try:
            await asyncio.sleep(before)
            fault_started = time.monotonic()
            await asyncio.to_thread(begin)
            fault_in_effect = time.monotonic()
            await asyncio.sleep(during)
            fault_lifted = time.monotonic()
            await asyncio.to_thread(end)
            fault_ended = time.monotonic()
            await self._until_quiet(fault_ended, max_after)
        finally:
            self._stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        recovery = self._recovery(fault_ended)
        try:
            checked = await self._check_sessions(clients[0])
            await self._probe_every_revoked(clients[0])
        finally:
            for client in clients:
                await client.aclose()
        return FaultReport(
            scenario=scenario,
            users=len(self.users),
            duration_s=time.monotonic() - started,
            fault_started=fault_started,
            fault_in_effect=fault_in_effect,
            fault_lifted=fault_lifted,
            fault_ended=fault_ended,
            calls=list(self.calls),
            bad_statuses=Counter(self._bad),
            bad_samples=list(self._bad_samples),
            revoked_accepted=self._revoked_accepted,
            revoked_probes=self._revoked_probes,
            lost_sessions=len(self._lost),
            lost_details=list(self._lost),
            crossed_sessions=self._crossed,
            recovery_s=recovery,
            checked_sessions=checked,
        )

    def _reset(self) -> None:
        self.calls = []
        self._bad.clear()
        self._bad_samples.clear()
        self._revoked_accepted = 0
        self._revoked_probes = 0
        self._lost.clear()
        self._crossed = 0
        self._stop = asyncio.Event()

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, timeout=REQUEST_TIMEOUT, limits=httpx.Limits(max_connections=4)
        )

    async def _call(
        self,
        client: httpx.AsyncClient,
        operation: str,
        method: str,
        path: str,
        *,
        record: bool = True,
        **kwargs: Any,
    ) -> httpx.Response | None:
        """One request; ``None`` when no HTTP answer came. Unexpected statuses are counted
        here, for the load's requests and the probes alike."""
        start = time.monotonic()
        try:
            response = await client.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            if record:
                self.calls.append(
                    Call(operation, start, time.monotonic(), None, type(exc).__name__)
                )
            return None
        status = response.status_code
        if not (200 <= status < 300 or status in ALLOWED_STATUSES):
            self._bad[status] += 1
            if len(self._bad_samples) < 10:
                self._bad_samples.append(f"{operation} {status} {response.text[:200]}")
        if record:
            self.calls.append(Call(operation, start, time.monotonic(), status))
        return response

    async def _loop(self, user: VirtualUser, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            progressed = await self._step(user, client)
            if not progressed:
                await asyncio.sleep(RETRY_PAUSE)

    async def _step(self, user: VirtualUser, client: httpx.AsyncClient) -> bool:
        """One turn of the loop; False when it failed and the user should pause."""
        if user.session is None:
            return await self._login(user, client)
        session = user.session
        if session.logout_pending or random.random() < LOGOUT_CHANCE:
            return await self._logout(user, client, session)
        if user.revoked and random.random() < PROBE_CHANCE:
            await self._probe(client, random.choice(user.revoked))
        refreshed = await self._call(
            client,
            "refresh",
            "POST",
            "/auth/refresh",
            json={"refresh_token": session.refresh_token},
        )
        if refreshed is None or refreshed.status_code != 200:
            if refreshed is None:
                session.unanswered_refreshes += 1
            elif refreshed.status_code == 401:
                self._session_lost(user, "refresh", refreshed)
            return False  # ambiguous: keep the token, present it again
        pair = refreshed.json()
        if {_sid(pair["access_token"]), _sid(pair["refresh_token"])} != {
            _sid(session.refresh_token)
        }:
            self._crossed += 1  # another session's tokens: a confusion, never to happen
        session.access_token = pair["access_token"]
        session.refresh_token = pair["refresh_token"]
        me = await self._call(
            client, "users_me", "GET", "/users/me", headers=_bearer(session.access_token)
        )
        if me is not None and me.status_code == 401:
            self._session_lost(user, "users_me", me)
        return me is not None and me.status_code == 200

    async def _login(self, user: VirtualUser, client: httpx.AsyncClient) -> bool:
        response = await self._call(
            client,
            "login",
            "POST",
            "/auth/login",
            json={"username": user.username, "password": PASSWORD},
        )
        if response is None or response.status_code != 200:
            return False
        pair = response.json()
        user.session = Session(pair["access_token"], pair["refresh_token"])
        return True

    async def _logout(self, user: VirtualUser, client: httpx.AsyncClient, session: Session) -> bool:
        response = await self._call(
            client,
            "logout",
            "POST",
            "/auth/logout",
            headers=_bearer(session.access_token),
            json={"refresh_token": session.refresh_token},
        )
        status = None if response is None else response.status_code
        if status is not None and 200 <= status < 300:
            ended = True
        else:
            # 401 token_revoked on a retry: the unanswered first attempt ended it.
            ended = (
                session.logout_pending
                and response is not None
                and _error(response)
                == (
                    401,
                    "token_revoked",
                )
            )
        if ended:
            user.revoked.append((session.access_token, session.refresh_token))
            user.session = None
            return True
        if response is not None and status == 401:
            self._session_lost(user, "logout", response)
            return True
        session.logout_pending = True
        return False

    async def _probe(self, client: httpx.AsyncClient, revoked: tuple[str, str]) -> None:
        """Present a revoked session's tokens: a 2xx on either is a revoked token accepted."""
        access_token, refresh_token = revoked
        for response in (
            await self._call(
                client, "probe", "GET", "/users/me", record=False, headers=_bearer(access_token)
            ),
            await self._call(
                client,
                "probe",
                "POST",
                "/auth/refresh",
                record=False,
                json={"refresh_token": refresh_token},
            ),
        ):
            if response is None:
                continue
            self._revoked_probes += 1
            if 200 <= response.status_code < 300:
                self._revoked_accepted += 1

    def _session_lost(self, user: VirtualUser, operation: str, response: httpx.Response) -> None:
        """The user's own token was refused though the user never logged it out."""
        unanswered = user.session.unanswered_refreshes if user.session else 0
        self._lost.append(
            f"{user.username} {operation} {_error(response)} after {unanswered} "
            "unanswered refreshes"
        )
        user.session = None  # a real user would have to log in again

    async def _until_quiet(self, fault_ended: float, max_after: float) -> None:
        deadline = fault_ended + max_after
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            last_failure = max(
                (call.start for call in self.calls if call.start >= fault_ended and not call.ok),
                default=fault_ended,
            )
            succeeded_since = any(call.start > last_failure and call.ok for call in self.calls)
            if succeeded_since and time.monotonic() - last_failure >= QUIET_SECONDS:
                return

    def _recovery(self, fault_ended: float) -> float | None:
        """Seconds from the end of the fault to the start of the unbroken run of successes
        that lasts to the end of the load; None if the load ended on a failure."""
        after = [call for call in self.calls if call.start >= fault_ended]
        failures = [call.start for call in after if not call.ok]
        if not failures:
            return 0.0
        last_failure = max(failures)
        if not any(call.ok and call.start > last_failure for call in after):
            return None
        return last_failure - fault_ended

    async def _check_sessions(self, client: httpx.AsyncClient) -> int:
        """Every user's last refresh token must still rotate (a pending logout is finished
        first); returns how many sessions were checked."""
        checked = 0
        for user in self.users:
            session = user.session
            if session is None:
                continue
            checked += 1
            deadline = time.monotonic() + FINAL_CHECK_SECONDS
            while time.monotonic() < deadline:
                if session.logout_pending:
                    if await self._logout(user, client, session):
                        break
                else:
                    response = await self._call(
                        client,
                        "final_refresh",
                        "POST",
                        "/auth/refresh",
                        record=False,
                        json={"refresh_token": session.refresh_token},
                    )
                    if response is not None and response.status_code == 200:
                        break
                    if response is not None and response.status_code == 401:
                        self._session_lost(user, "final refresh", response)
                        break
                await asyncio.sleep(RETRY_PAUSE)
            else:
                self._lost.append(f"{user.username}: no answer to the final check")
        return checked

    async def _probe_every_revoked(self, client: httpx.AsyncClient) -> None:
        for user in self.users:
            for revoked in user.revoked[-FINAL_PROBES_PER_USER:]:
                await self._probe(client, revoked)


def _sid(token: str) -> str | None:
    """The ``sid`` claim of one of our JWTs, read without verifying it."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    sid = claims.get("sid") if isinstance(claims, dict) else None
    return sid if isinstance(sid, str) else None


def _bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def _error(response: httpx.Response) -> tuple[int, str | None]:
    body: object = None
    with contextlib.suppress(ValueError):
        body = response.json()
    return response.status_code, body.get("error") if isinstance(body, dict) else None
