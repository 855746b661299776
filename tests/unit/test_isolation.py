"""consumers/isolation.py: a redelivered message runs alone; the prefetch narrows and opens."""

from __future__ import annotations

import asyncio

from consumers.isolation import DELIVERY_COUNT, Isolation, delivered_before

FIRST_TIME = {DELIVERY_COUNT: 0}
AGAIN = {DELIVERY_COUNT: 1}


def test_a_message_delivered_before_is_one_whose_delivery_ended_without_an_ack() -> None:
    assert delivered_before({DELIVERY_COUNT: 2})
    assert not delivered_before(FIRST_TIME)
    assert not delivered_before({})  # a classic queue, or a first delivery of an old broker
    assert not delivered_before({DELIVERY_COUNT: True})


async def test_a_session_starts_one_at_a_time_and_opens_up_at_a_first_time_message() -> None:
    told: list[int] = []

    async def set_prefetch(count: int) -> None:
        told.append(count)

    isolation = Isolation(set_prefetch, prefetch=32)
    await isolation.start()
    async with isolation.handling(AGAIN):  # what a crashed process held comes back first
        pass
    assert told == [1]
    async with isolation.handling(FIRST_TIME):
        pass
    assert told == [1, 32]


async def test_a_redelivered_message_waits_until_nothing_else_is_in_flight() -> None:
    async with asyncio.timeout(5):
        told: list[int] = []

        async def set_prefetch(count: int) -> None:
            told.append(count)

        isolation = Isolation(set_prefetch, prefetch=32)
        await isolation.start()
        events: list[str] = []
        release = asyncio.Event()

        async def ordinary(name: str) -> None:
            async with isolation.handling(FIRST_TIME):
                events.append(f"{name} starts")
                await release.wait()
                events.append(f"{name} ends")

        async def suspect() -> None:
            async with isolation.handling(AGAIN):
                events.append("suspect runs")

        first = asyncio.create_task(ordinary("a"))
        second = asyncio.create_task(ordinary("b"))
        await asyncio.sleep(0.01)
        alone = asyncio.create_task(suspect())
        await asyncio.sleep(0.01)
        assert events == ["a starts", "b starts"], "the suspect must wait"
        assert told == [1, 32, 1], "and take one message at a time meanwhile"
        release.set()
        await asyncio.gather(first, second, alone)
        assert events[-1] == "suspect runs"
        async with isolation.handling(FIRST_TIME):
            pass
        assert told == [1, 32, 1, 32]
