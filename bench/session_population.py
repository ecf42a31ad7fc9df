"""Realistic live sessions for the memory benchmark: users with several devices each.

Every record is what ``tokenstile.core.sessions`` would write at login: 128-bit ids, a
browser's ``User-Agent`` (about 100 characters on average), an IPv4 address, one login
in five with "remember me". Half of the sessions have been refreshed since, so they
carry a ``previous_jti`` and a ``rotated_at`` as most live sessions do.
"""

from __future__ import annotations

import math
import random
import secrets
import uuid
from dataclasses import dataclass, field, replace

from tokenstile.core.store import SessionRecord, UserRecord

# Real browsers' strings; their mean length is close to 100 characters.
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
    " Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Version/17.4.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Safari/537.36",
    "okhttp/4.12.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.80",
)
SESSIONS_PER_USER = (1, 7)  # uniform: 4 devices on average
REMEMBER_ME_SHARE = 0.2
ROTATED_SHARE = 0.5
REFRESH_TTL = 604_800  # the defaults of settings.py, so nothing expires while measuring
REMEMBER_ME_TTL = 2_592_000
SESSION_MAX_AGE = 7_776_000
PASSWORD_HASH = "$argon2id$v=19$m=65536,t=3,p=4$" + "A" * 22 + "$" + "B" * 43


@dataclass
class Population:
    users: list[UserRecord] = field(default_factory=list)
    sessions: list[SessionRecord] = field(default_factory=list)
    rotated: set[str] = field(default_factory=set)
    """The sids refreshed once after login (their record holds the rotated state)."""


def token_id() -> str:
    return secrets.token_urlsafe(16)


def make_population(count: int, *, now: float, seed: int = 11) -> Population:
    """``count`` live sessions of about ``count / 4`` users."""
    rng = random.Random(seed)
    population = Population()
    while len(population.sessions) < count:
        index = len(population.users)
        user = UserRecord(
            id=str(uuid.uuid4()),
            username=f"user{index:06d}",
            password_hash=PASSWORD_HASH,
            created_at=now - rng.uniform(0, 3e7),
        )
        population.users.append(user)
        for _ in range(min(rng.randint(*SESSIONS_PER_USER), count - len(population.sessions))):
            session = _session(user, rng, now)
            if rng.random() < ROTATED_SHARE:
                session = _rotated(session, now + rng.uniform(0, 60))
                population.rotated.add(session.sid)
            population.sessions.append(session)
    return population


def _session(user: UserRecord, rng: random.Random, now: float) -> SessionRecord:
    created = now - rng.uniform(0, 3600)
    issued_at = math.floor(created)
    remember_me = rng.random() < REMEMBER_ME_SHARE
    refresh_ttl = REMEMBER_ME_TTL if remember_me else REFRESH_TTL
    max_expires_at = issued_at + SESSION_MAX_AGE
    return SessionRecord(
        sid=token_id(),
        user_id=user.id,
        username=user.username,
        current_jti=token_id(),
        current_iat=issued_at,
        previous_jti=None,
        rotated_at=None,
        refresh_ttl=refresh_ttl,
        expires_at=min(issued_at + refresh_ttl, max_expires_at),
        max_expires_at=max_expires_at,
        created_at=created,
        last_used_at=created,
        user_agent=rng.choice(USER_AGENTS),
        ip=".".join(str(rng.randint(1, 254)) for _ in range(4)),
        client_id="tokenstile",
        remember_me=remember_me,
    )


def _rotated(session: SessionRecord, now: float) -> SessionRecord:
    """The record as a refresh at ``now`` leaves it (what every store's rotate writes)."""
    issued_at = math.floor(now)
    return replace(
        session,
        previous_jti=session.current_jti,
        current_jti=token_id(),
        current_iat=issued_at,
        rotated_at=now,
        last_used_at=now,
        expires_at=min(issued_at + session.refresh_ttl, session.max_expires_at),
    )


def mean_user_agent_length(sessions: list[SessionRecord]) -> float:
    lengths = [len(s.user_agent or "") for s in sessions]
    return sum(lengths) / len(lengths) if lengths else 0.0
