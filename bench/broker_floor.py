"""What RabbitMQ costs a Python process per message with nothing of ours around it: raw aio-pika
publishing with confirms to a quorum queue (as the consumers' queues are), then consuming it with
prefetch 128 and one ack per 100 (multiple), on uvloop. Prints CPU µs per message of this
process for each, and RabbitMQ's (beam.smp) over both: the floor under the relay's and the
consumers' own cost per event, and under RabbitMQ's (the pipeline's "CPU per booking, by
process", docs/PERFORMANCE.md).

    uv run --frozen python -m bench.broker_floor [--messages 20000] [--json]

The pipeline (bench/pipeline.py) runs it after each of its runs, in a process of its own
(`in_subprocess`), to put a floor under what two cores can sustain on the machine at hand.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import subprocess
import sys
import time
import uuid

import aio_pika
import uvloop
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from bench.service import ROOT, cpu_seconds_of, pids_named
from service.settings import Settings

IN_FLIGHT = 1_000
ACK_EVERY = 100
# An event's size and properties, as the relay sends one (bench/relay.py makes the same).
BODY = (
    b'{"header":{"id":"01a2306f-cbfa-728a-bf71-bd88164605e3","published_at":"2026-12-01T07:09:2'
    b'1.123456+00:00","idempotency_key":"01a2306f-cbf3-76d1-8e8c-a98b9f0096f3"},"booking_id":"01'
    b'a2306f-cbf3-76d1-8e8c-a98b9f0096f3","show_id":"01a2306f-cbeb-7635-9370-83350332cbb0","num'
    b'ber_of_tickets":2,"customer_email":"fan@example.com"}'
)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def publish(channel: aio_pika.abc.AbstractChannel, queue: str, count: int) -> float:
    started = time.process_time()
    for start in range(0, count, IN_FLIGHT):
        await asyncio.gather(
            *(
                channel.default_exchange.publish(_message(), routing_key=queue)
                for _ in range(min(IN_FLIGHT, count - start))
            )
        )
    return time.process_time() - started


def _message() -> aio_pika.Message:
    return aio_pika.Message(
        BODY,
        message_id=str(uuid.uuid4()),
        correlation_id="bench",
        type="BookingMade",
        headers={"traceparent": TRACEPARENT},
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def consume(queue: AbstractQueue, count: int) -> float:
    done = asyncio.Event()
    seen = 0

    async def on_message(message: AbstractIncomingMessage) -> None:
        nonlocal seen
        seen += 1
        if seen % ACK_EVERY == 0 or seen == count:
            await message.ack(multiple=True)
        if seen == count:
            done.set()

    started = time.process_time()
    tag = await queue.consume(on_message)
    await done.wait()
    spent = time.process_time() - started
    await queue.cancel(tag)
    return spent


@dataclasses.dataclass(frozen=True)
class Floor:
    """CPU µs per message: this process publishing (with confirms) and consuming, and RabbitMQ
    over both."""

    publish_us: float
    consume_us: float
    rabbitmq_us: float


async def measure(count: int) -> Floor:
    connection = await aio_pika.connect(Settings.from_env().amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=128)
        queue = await channel.declare_queue(
            f"bench_floor_{uuid.uuid4().hex[:8]}",
            durable=True,
            arguments={"x-queue-type": "quorum"},
        )
        try:
            broker = _rabbitmq_cpu()
            published = await publish(channel, queue.name, count)
            consumed = await consume(queue, count)
            broker = _rabbitmq_cpu() - broker
        finally:
            await queue.delete(if_unused=False, if_empty=False)
    return Floor(*(spent / count * 1e6 for spent in (published, consumed, broker)))


def _rabbitmq_cpu() -> float:
    return sum(map(cpu_seconds_of, pids_named("beam.smp")))


def in_subprocess(env: dict[str, str], count: int) -> Floor:
    """The floor measured by a process of its own (none of the bench's modules, allocations or
    collector in it), against the broker `env` names."""
    command = [sys.executable, "-m", "bench.broker_floor", "--messages", str(count), "--json"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return Floor(**json.loads(done.stdout))


def report(floor: Floor, count: int) -> str:
    return "\n".join(
        [
            f"raw aio-pika, {count:,} messages, quorum queue, CPU per message:",
            f"  this process, publish with confirms, {IN_FLIGHT} in flight:"
            f" {floor.publish_us:.0f} µs",
            f"  this process, consume, prefetch 128, one ack per {ACK_EVERY}:"
            f" {floor.consume_us:.0f} µs",
            f"  RabbitMQ (beam.smp), both: {floor.rabbitmq_us:.0f} µs",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--json", action="store_true", help="print the floor as JSON")
    args = parser.parse_args()
    # uvloop alone: not service.common.loop.run, which also tunes the garbage collector.
    floor = uvloop.run(measure(args.messages))
    print(json.dumps(dataclasses.asdict(floor)) if args.json else report(floor, args.messages))


if __name__ == "__main__":
    main()
