"""Session-liveness checks that share one store round trip.

Every request with an access token asks the store whether its session is still live
(SPEC §1 invariant 5). Asked one at a time, that is one round trip per request. Here the
questions asked in one event-loop turn wait together and go out as one batch
(:meth:`SessionStore.are_active`) at the end of the turn. Nothing is cached: each
question is sent after it was asked, so a logout that answered before a request
arrived is always seen, and no answer outlives its batch.
"""

from __future__ import annotations

import asyncio

from tokenstile.core.clock import Clock
from tokenstile.core.store import SessionStore


class LivenessBatcher:
    """Answers "is session ``sid`` live?" for many concurrent callers in one store call.

    Bound to the event loop it is first used on, like the store's connections.
    """

    def __init__(self, store: SessionStore, *, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._waiting: dict[str, list[asyncio.Future[bool]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def is_active(self, sid: str) -> bool:
        """Whether session ``sid`` exists, is not revoked and has not expired.

        Raises ``StoreUnavailable`` when the store cannot answer.
        """
        loop = asyncio.get_running_loop()
        if not self._waiting:
            loop.call_soon(self._send)
        answer: asyncio.Future[bool] = loop.create_future()
        self._waiting.setdefault(sid, []).append(answer)
        return await answer

    def _send(self) -> None:
        batch, self._waiting = self._waiting, {}
        task = asyncio.ensure_future(self._ask(batch))
        # Keep a reference until done: the loop holds tasks only weakly.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask(self, batch: dict[str, list[asyncio.Future[bool]]]) -> None:
        try:
            live = await self._store.are_active(list(batch), now=self._clock())
        except Exception as exc:  # every waiter fails as the one call did
            for answers in batch.values():
                for answer in answers:
                    if not answer.done():
                        answer.set_exception(exc)
            return
        for sid, answers in batch.items():
            for answer in answers:
                if not answer.done():  # a waiter may have been cancelled
                    answer.set_result(sid in live)
