"""``reserve_any``: a place in whichever account's gate admits first.

Every account's gate is entered at once (each in its own task); the first admission wins,
the waits still pending are cancelled (the gates are cancel-safe: a cancelled waiter leaves
the queue and undoes an admission it did not live to see), and an admission that came a
moment too late is given back at once, unused. With :class:`asyncsdk.RedisGate` the waits
are places in each account's queue shared by every process, so a job goes to whichever
account, in whichever process, can start it first.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import anyio

from .._client import AsyncClient
from .._limits import Priority
from .._submission import Reservation

__all__ = ["reserve_any"]


@contextlib.asynccontextmanager
async def reserve_any(
    clients: Sequence[AsyncClient], *, priority: Priority | str | None = None
) -> AsyncIterator[tuple[AsyncClient, Reservation]]:
    """Wait for whichever account can start a submission first; ``(client, reservation)``.

    >>> async def main(clients: list[AsyncClient]) -> None:          # doctest: +SKIP
    ...     async with reserve_any(clients) as (client, reservation):
    ...         await client.submit("google/nano-banana", "a kite", reservation=reservation)

    Leaving the block gives an unused reservation back (see :class:`asyncsdk.Reservation`).
    If every account's gate fails, the first failure is raised.
    """
    if not clients:
        raise ValueError("reserve_any() needs at least one client")
    client, reservation = await _first_admitted(clients, priority)
    try:
        yield client, reservation
    finally:
        with anyio.CancelScope(shield=True):
            await reservation.close()


async def _first_admitted(
    clients: Sequence[AsyncClient], priority: Priority | str | None
) -> tuple[AsyncClient, Reservation]:
    winner: tuple[AsyncClient, Reservation] | None = None
    failures: list[Exception] = []

    async def contend(client: AsyncClient) -> None:
        nonlocal winner
        reservation = client.reserve(priority=priority)
        try:
            await reservation.__aenter__()
        except Exception as exc:  # this account's gate failed: the others may still admit
            failures.append(exc)
            if len(failures) == len(clients):
                tg.cancel_scope.cancel()
            return
        if winner is None:
            winner = (client, reservation)
            tg.cancel_scope.cancel()  # stop waiting at the other gates
        else:  # admitted a moment after the winner: give it back unused
            with anyio.CancelScope(shield=True):
                await reservation.close()

    try:
        async with anyio.create_task_group() as tg:
            for client in clients:
                tg.start_soon(contend, client)
    except BaseException:  # cancelled from outside after a winner was found: give it back
        if winner is not None:
            with anyio.CancelScope(shield=True):
                await winner[1].close()
        raise
    if winner is None:
        raise failures[0]
    return winner
