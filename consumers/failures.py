"""How a consumer says an attempt failed. The runner decides what follows from the kind:

- Unavailable: our own PostgreSQL or RabbitMQ is away. Not the message's fault, so it costs no
  attempt: the runner stops taking messages, leaves them in the queue and reconnects.
- Rejected: the effect refused this message for good (the provider answered 4xx). Retrying
  cannot help: straight to the dead-letter queue.
- anything else: transient (a 5xx, a timeout, a refused connection to the provider, a bug):
  retried with growing delays, dead-lettered after CONSUMER_MAX_ATTEMPTS.
"""

from __future__ import annotations

from service.common.outages import Unavailable

__all__ = ["Rejected", "Unavailable"]


class Rejected(Exception):
    """The message can never succeed; the text says why."""
