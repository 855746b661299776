"""The outbox relay: committed outbox rows → RabbitMQ, confirmed, in per-show commit order.

leader.py     OutboxRelay: who leads (a session advisory lock), the loop, outages
publisher.py  OutboxPublisher: read a batch, publish it with confirms, mark what was confirmed
purge.py      Purge: delete published rows and expired idempotency keys, beside the relay
"""

from service.relay.leader import OutboxRelay
from service.relay.publisher import confirmed_prefix, message_for

__all__ = ["OutboxRelay", "confirmed_prefix", "message_for"]
