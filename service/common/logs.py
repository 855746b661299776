"""Process-wide logging: one line per event, with the correlation id of the work it belongs to."""

from __future__ import annotations

import logging

from service.common.context import CorrelationFilter


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(CorrelationFilter())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log would print a line per booking during a sale; keep it at WARNING.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # aiormq logs every failed connect as an ERROR; the relay and the consumers log broker
    # outages themselves, once per state change, with what they were doing.
    logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
