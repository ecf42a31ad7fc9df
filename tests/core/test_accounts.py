"""AccountService on a real SQLite store: username and password policy, credential checks."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import argon2
import pytest

from tests.core.clocks import FakeClock
from tokenstile.core.accounts import AccountService
from tokenstile.core.passwords import PasswordHasher
from tokenstile.errors import (
    InvalidCredentials,
    InvalidRequest,
    RegistrationClosed,
    UsernameTaken,
    WeakPassword,
)
from tokenstile.stores.sql import SqlDatabase, SqlUserStore

PASSWORD = "correct horse battery"
START = 1_700_000_000.0


def cheap_hasher(time_cost: int = 1, memory_cost: int = 8192) -> PasswordHasher:
    """Argon2id with test-sized costs, so the suite stays fast."""
    return PasswordHasher(
        argon2.PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=1)
    )


@pytest.fixture
async def users(tmp_path: Path) -> AsyncIterator[SqlUserStore]:
    db = SqlDatabase.from_url(f"sqlite+aiosqlite:///{tmp_path / 'accounts.db'}")
    await db.upgrade()
    yield db.users
    await db.aclose()


@pytest.fixture
def accounts(users: SqlUserStore) -> AccountService:
    return AccountService(users, cheap_hasher(), clock=FakeClock(START))


# -- usernames ---------------------------------------------------------------------------


async def test_usernames_are_normalised_with_nfkc_casefold_and_trim(
    accounts: AccountService,
) -> None:
    user = await accounts.register("Ａlice ", PASSWORD)  # a fullwidth A, a trailing space

    assert user.username == "alice"
    assert (await accounts.authenticate("ALICE", PASSWORD)).id == user.id
    assert (await accounts.authenticate("  alice", PASSWORD)).id == user.id
    assert (await accounts.find("ＡＬＩＣＥ")).id == user.id


async def test_differently_written_names_of_one_user_are_taken(accounts: AccountService) -> None:
    await accounts.register("Ａlice ", PASSWORD)

    with pytest.raises(UsernameTaken):
        await accounts.register("ALICE", PASSWORD)


@pytest.mark.parametrize(
    "username",
    [
        "",
        "ab",
        " ab ",
        "a" * 65,
        "al ice",
        "alice!",
        "ali/ce",
        "alice\x00",
        "<script>",
        "ali\u200bce",  # a zero-width space
    ],
    ids=repr,
)
async def test_too_short_too_long_or_odd_usernames_are_invalid(
    accounts: AccountService, username: str
) -> None:
    with pytest.raises(InvalidRequest):
        await accounts.register(username, PASSWORD)


@pytest.mark.parametrize("username", ["abc", "a" * 64, "jane.doe_1-2@example.org+x", "élise"])
async def test_usernames_at_the_edges_of_the_policy_are_accepted(
    accounts: AccountService, username: str
) -> None:
    assert (await accounts.register(username, PASSWORD)).username == username


# -- passwords ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["", "abc1234", ("abcdefgh" * 129)[:1025], "aaaaaaaaaaaa", "ababababab", "Alice-Smith"],
    ids=["empty", "7-chars", "1025-chars", "one-char-repeated", "two-chars", "the-username"],
)
async def test_weak_passwords_are_refused(accounts: AccountService, password: str) -> None:
    with pytest.raises(WeakPassword):
        await accounts.register("alice-smith", password)

    with pytest.raises(InvalidCredentials):
        await accounts.authenticate("alice-smith", password)  # nothing was created


@pytest.mark.parametrize("password", ["abcd1234", ("abcdefgh" * 128)], ids=["8", "1024"])
async def test_passwords_of_8_to_1024_characters_are_accepted(
    accounts: AccountService, password: str
) -> None:
    user = await accounts.register("alice", password)

    assert (await accounts.authenticate("alice", password)).id == user.id


async def test_a_duplicate_username_is_taken(accounts: AccountService) -> None:
    await accounts.register("alice", PASSWORD)

    with pytest.raises(UsernameTaken):
        await accounts.register("alice", "another password")


async def test_registration_can_be_closed_while_admins_still_create_users(
    users: SqlUserStore,
) -> None:
    closed = AccountService(users, cheap_hasher(), clock=FakeClock(START), allow_registration=False)

    with pytest.raises(RegistrationClosed):
        await closed.register("alice", PASSWORD)
    assert await users.get_user_by_name("alice") is None

    created = await closed.create_user("alice", PASSWORD)
    assert (await closed.authenticate("alice", PASSWORD)).id == created.id


# -- credential checks -------------------------------------------------------------------


async def test_unknown_user_and_wrong_password_are_indistinguishable(
    accounts: AccountService,
) -> None:
    await accounts.register("alice", PASSWORD)

    with pytest.raises(InvalidCredentials) as wrong_password:
        await accounts.authenticate("alice", "not the password")
    with pytest.raises(InvalidCredentials) as unknown_user:
        await accounts.authenticate("nobody", PASSWORD)
    with pytest.raises(InvalidCredentials) as invalid_name:
        await accounts.authenticate("?", PASSWORD)

    answers = {(e.value.code, e.value.detail) for e in (wrong_password, unknown_user, invalid_name)}
    assert answers == {("invalid_credentials", "Incorrect username or password.")}


async def test_a_disabled_user_cannot_authenticate(accounts: AccountService) -> None:
    await accounts.register("alice", PASSWORD)
    assert (await accounts.authenticate("alice", PASSWORD)).disabled_at is None

    await accounts.disable("alice")

    with pytest.raises(InvalidCredentials) as refused:
        await accounts.authenticate("alice", PASSWORD)
    assert refused.value.detail == "Incorrect username or password."


async def test_change_password_requires_the_current_password(accounts: AccountService) -> None:
    user = await accounts.register("alice", PASSWORD)

    with pytest.raises(InvalidCredentials):
        await accounts.change_password(user.id, "not the password", "a brand new secret")
    assert (await accounts.authenticate("alice", PASSWORD)).id == user.id

    await accounts.change_password(user.id, PASSWORD, "a brand new secret")

    assert (await accounts.authenticate("alice", "a brand new secret")).id == user.id
    with pytest.raises(InvalidCredentials):
        await accounts.authenticate("alice", PASSWORD)


async def test_change_password_applies_the_password_policy(accounts: AccountService) -> None:
    user = await accounts.register("alice", PASSWORD)

    with pytest.raises(WeakPassword):
        await accounts.change_password(user.id, PASSWORD, "short")

    assert (await accounts.authenticate("alice", PASSWORD)).id == user.id


async def stored_hash(users: SqlUserStore, user_id: str) -> str:
    stored = await users.get_user(user_id)
    assert stored is not None
    return stored.password_hash


async def test_a_hash_with_weaker_parameters_is_rehashed_on_successful_login(
    users: SqlUserStore,
) -> None:
    weak = AccountService(users, cheap_hasher(time_cost=1), clock=FakeClock(START))
    stronger_hasher = cheap_hasher(time_cost=2, memory_cost=16384)
    stronger = AccountService(users, stronger_hasher, clock=FakeClock(START))
    user = await weak.register("alice", PASSWORD)
    old_hash = user.password_hash
    assert stronger_hasher.needs_rehash(old_hash)

    with pytest.raises(InvalidCredentials):
        await stronger.authenticate("alice", "not the password")
    assert await stored_hash(users, user.id) == old_hash  # only on success

    await stronger.authenticate("alice", PASSWORD)

    new_hash = await stored_hash(users, user.id)
    assert new_hash != old_hash
    assert "m=16384,t=2,p=1" in new_hash
    assert not stronger_hasher.needs_rehash(new_hash)
    assert (await stronger.authenticate("alice", PASSWORD)).id == user.id


# -- the production hasher ---------------------------------------------------------------


async def test_default_hasher_uses_argon2id_and_unknown_users_cost_a_real_verification(
    users: SqlUserStore,
) -> None:
    accounts = AccountService(users, PasswordHasher(), clock=FakeClock(START))
    user = await accounts.register("alice", PASSWORD)
    assert user.password_hash.startswith("$argon2id$")

    async def seconds_to_refuse(username: str) -> float:
        started = time.perf_counter()
        with pytest.raises(InvalidCredentials):
            await accounts.authenticate(username, "not the password")
        return time.perf_counter() - started

    await seconds_to_refuse("nobody")  # the first unknown user also makes the dummy hash
    unknown, wrong = [], []
    for _ in range(3):  # interleaved, so a burst of machine load hits both alike
        unknown.append(await seconds_to_refuse("nobody"))
        wrong.append(await seconds_to_refuse("alice"))

    unknown_median, wrong_median = statistics.median(unknown), statistics.median(wrong)
    assert unknown_median > 0.5 * wrong_median, (unknown, wrong)
    assert wrong_median > 0.5 * unknown_median, (unknown, wrong)
