"""Store failures for operators: named, classified, and logged once per cause per interval."""

from __future__ import annotations

import logging

import pytest

from tokenstile.errors import StoreMisconfigured, StoreUnavailable
from tokenstile.stores import failures
from tokenstile.stores.failures import REPEAT_AFTER, network_reason, store_failure


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    clock = FakeClock()
    monkeypatch.setattr(failures, "_logged", failures._OncePer(REPEAT_AFTER, clock))
    return clock


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "tokenstile.stores"]


def test_a_failure_names_the_store_and_the_cause_but_not_to_clients(clock: FakeClock) -> None:
    error = store_failure("redis 10.0.0.5:6379 db 0", "connection refused")
    assert type(error) is StoreUnavailable
    assert error.cause == "redis 10.0.0.5:6379 db 0: connection refused"
    assert "10.0.0.5" not in error.detail
    assert error.code == "store_unavailable"
    assert error.status_code == 503


def test_a_misconfiguration_is_its_own_kind_and_still_a_503(clock: FakeClock) -> None:
    error = store_failure("postgresql db:5432/auth", "no schema", misconfigured=True)
    assert isinstance(error, StoreMisconfigured)
    assert error.status_code == 503
    assert error.code == "store_unavailable"


def test_the_same_cause_is_logged_once_per_interval(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tokenstile.stores")
    for _ in range(100):
        store_failure("redis a:1 db 0", "connection refused")
    store_failure("redis b:1 db 0", "connection refused")  # another cause: its own line
    clock.now += REPEAT_AFTER - 0.1
    store_failure("redis a:1 db 0", "connection refused")
    assert warnings(caplog) == [
        "store unavailable: redis a:1 db 0: connection refused",
        "store unavailable: redis b:1 db 0: connection refused",
    ]
    clock.now += 0.1
    store_failure("redis a:1 db 0", "connection refused")
    assert warnings(caplog)[-1] == "store unavailable: redis a:1 db 0: connection refused"
    assert len(warnings(caplog)) == 3


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), "connection refused"),
        (TimeoutError(), "timed out"),
        (OSError(113, "No route to host"), "host unreachable"),
    ],
)
def test_a_socket_error_anywhere_in_the_chain_gives_the_reason(error: OSError, reason: str) -> None:
    def wrapped() -> None:
        try:
            raise error
        except OSError:
            # `from None` hides the cause from tracebacks but keeps it as __context__.
            raise RuntimeError("the driver's own wrapper") from None

    with pytest.raises(RuntimeError) as raised:
        wrapped()
    assert network_reason(raised.value) == reason
    assert network_reason(ValueError("not a socket problem")) is None
