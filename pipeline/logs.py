"""Structured logging: readable lines on a terminal, one JSON object per line in services."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
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


# What the Kafka clients (aiokafka's connection, coordinator and fetcher loggers) and our own
# retry loops say while a broker is away: matched in the message and in the exception.
_CONNECTION_TROUBLE = re.compile(
    r"(?i)KafkaConnectionError|NodeNotReady|Unable connect|Unable to (?:update|request) metadata"
    r"|Unable to bootstrap|Connect call failed|Connection at \S+ closed|CoordinatorNotAvailable"
    r"|NotCoordinator|marking (?:the )?coordinator dead|coordinator \(node \S+\) is either not"
    r"|LeaderNotAvailable|NotLeaderFor"
    r"|UnknownTopicOrPartition|RequestTimedOut|KafkaTimeoutError"
)


class KafkaNoise(logging.Filter):
    """Folds the flood of Kafka connection errors into what a person needs to read.

    A dead broker makes every aiokafka client log a few errors per second (thousands a
    minute under `sonicbus up`), and every retry loop of ours adds its own. This filter sits
    on the root handler:

    - while a watchdog follows the broker (`sonicbus up`: `BrokerWatchdog`), connection errors
      are held (counted, not printed) and the watchdog is woken to look: it says once that the
      broker is unreachable and once that it is back; `hold_until` keeps them folded for a
      grace period after it is back, while the clients reconnect;
    - otherwise (a lone `sonicbus embed`) each kind of connection error is printed once per
      `window_s`, the rest counted.

    Other records pass untouched.
    """

    def __init__(self, window_s: float = 60.0) -> None:
        super().__init__()
        self.window_s = window_s
        self.held = 0
        self.last_held = ""  # the latest held message, for the watchdog's summary
        self.watcher: Callable[[], None] | None = None  # wakes the watchdog
        self._outage = False
        self._hold_until = 0.0
        self._last_printed: dict[tuple[str, object], float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def is_connection_trouble(record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            text = f"{text} {type(error).__name__}: {error}"
        return _CONNECTION_TROUBLE.search(text) is not None

    def outage_began(self) -> None:
        with self._lock:
            self._outage = True

    def outage_ended(self, grace_s: float) -> int:
        """The broker answers again; the clients' reconnect errors of the next `grace_s` stay
        folded. Returns how many records were held."""
        with self._lock:
            self._outage = False
            self._hold_until = time.monotonic() + grace_s
            held, self.held = self.held, 0
        return held

    def take_held(self) -> tuple[int, str]:
        """How many records were held since the last call, and the latest of them."""
        with self._lock:
            held, self.held = self.held, 0
            return held, self.last_held

    def filter(self, record: logging.LogRecord) -> bool:
        # The watchdog's own summaries ("folded" in their extra) always pass.
        if getattr(record, "folded", None) is not None or not self.is_connection_trouble(record):
            return True
        with self._lock:
            if self._outage or time.monotonic() < self._hold_until:
                self.held += 1
                self.last_held = record.getMessage()
                return False
            if self.watcher is not None:
                self.held += 1
                self.last_held = record.getMessage()
                wake = self.watcher
            else:
                key = (record.name, record.msg)
                now = time.monotonic()
                if now - self._last_printed.get(key, -self.window_s) < self.window_s:
                    self.held += 1
                    return False
                self._last_printed[key] = now
                return True
        wake()  # outside the lock: the watchdog looks at the broker now
        return False


kafka_noise = KafkaNoise()
"""The one filter of this process (installed on the root handler by `setup_logging`)."""


def setup_logging(level: str = "INFO", fmt: str = "console") -> None:
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=True, log_time_format="%H:%M:%S")
    handler.addFilter(kafka_noise)
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
