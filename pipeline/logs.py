"""Structured logging: readable lines on a terminal, one JSON object per line in services."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Fields passed with `extra=` become top-level keys, so logs can be queried."""

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


def setup_logging(level: str = "INFO", fmt: str = "console") -> None:
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=True, log_time_format="%H:%M:%S")
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in (
        "aiokafka",
        "kafka",
        "pymilvus",
        "milvus_lite",
        "faiss",
        "faststream",
        "numba",
        "httpx",
    ):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # Milvus Lite's in-process gRPC server logs a traceback for RPCs it does not
    # implement (AllocTimestamp, asked while an index is created); the client
    # copes, and real failures reach the caller as exceptions.
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
