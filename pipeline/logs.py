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

# What pymilvus, and our store callers (`StoreUnavailable`: "Milvus at <uri>: ..."), say
# while Milvus is away; other Milvus errors (a missing collection) are not an outage.
_STORE_TROUBLE = re.compile(
    r"(?i)Fail connecting to server|server unavailable|StatusCode\.UNAVAILABLE"
    r"|DEADLINE_EXCEEDED|failed to connect|Connection refused|Retry timeout"
)


class StoreNoise(logging.Filter):
    """Folds the flood of Milvus errors during an outage into two lines.

    A Milvus outage makes pymilvus log an error with its full traceback for every failed
    call, and every retry loop of ours a warning (2,400+ lines in a 30 s cut, measured on
    an embedder). On the root handler this filter lets the first such record through,
    rewritten to "Milvus is unreachable (...)", holds the rest (counted; a reminder with the
    count every `window_s`), and `reachable()`, called by the store on its next successful
    call, says once that Milvus answers again with the number of lines folded.
    pymilvus' other records pass, their tracebacks cut (the caller gets the exception).
    """

    def __init__(self, window_s: float = 60.0) -> None:
        super().__init__()
        self.window_s = window_s
        self.held = 0
        self._outage = False
        self._since = 0.0
        self._last_printed = 0.0
        self._lock = threading.Lock()

    @staticmethod
    def is_store_trouble(record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return False
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            text = f"{text} {type(error).__name__}: {error}"
        about_milvus = record.name.startswith("pymilvus") or "Milvus" in text
        return about_milvus and _STORE_TROUBLE.search(text) is not None

    @property
    def in_outage(self) -> bool:
        return self._outage

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("pymilvus") and isinstance(record.msg, str):
            record.msg = record.msg.split("\nTraceback:", 1)[0]
        if getattr(record, "folded", None) is not None or not self.is_store_trouble(record):
            return True
        now = time.monotonic()
        with self._lock:
            if self._outage and now - self._last_printed < self.window_s:
                self.held += 1
                return False
            detail = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                detail = f"{detail}: {record.exc_info[1]}"
            first_line = (detail.splitlines() or [""])[0][:300]
            if self._outage:
                text = f"Milvus still unreachable after {now - self._since:.0f} s ({first_line})"
            else:
                self._outage, self._since = True, now
                text = f"Milvus is unreachable ({first_line}); repeats are folded until it answers"
            self._last_printed = now
            record.folded = self.held
        record.msg, record.args, record.exc_info, record.exc_text = text, None, None, None
        return True

    def reachable(self, where: str) -> None:
        """A store call succeeded: ends an outage, saying so once with the count folded."""
        if not self._outage:  # the common case, without the lock
            return
        with self._lock:
            if not self._outage:
                return
            self._outage = False
            held, self.held = self.held, 0
            gone_s = time.monotonic() - self._since
        logging.getLogger("pipeline.store").warning(
            "Milvus at %s answers again after %.0f s; %d log lines were folded",
            where, gone_s, held, extra={"folded": held},
        )  # fmt: skip


store_noise = StoreNoise()
"""The Milvus counterpart of `kafka_noise` (also on the root handler)."""


def take_over_logs(package: str) -> None:
    """pymilvus and FastStream give their loggers a plain-text (FastStream: coloured)
    handler of their own when they are imported, and stop them propagating: hand their
    records to ours instead, so they come out as our lines (JSON in services), through
    `store_noise` and `kafka_noise`, at the level `setup_logging` gives the package."""
    for name in list(logging.root.manager.loggerDict):
        if name == package or name.startswith(f"{package}."):
            logger = logging.getLogger(name)
            logger.handlers.clear()
            logger.propagate = True
            logger.setLevel(logging.NOTSET if name != package else quiet_level())


def quiet_level() -> int:
    """The level of a chatty library: WARNING, or the root's when that is higher."""
    return max(logging.WARNING, logging.root.level)


def setup_logging(level: str = "INFO", fmt: str = "console") -> None:
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=True, log_time_format="%H:%M:%S")
    handler.addFilter(kafka_noise)
    handler.addFilter(store_noise)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Else pipeline.store / pipeline.bus take them over when they import the package.
    for package in ("pymilvus", "faststream"):
        if package in sys.modules:
            take_over_logs(package)
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
        logging.getLogger(noisy).setLevel(quiet_level())
    # Milvus Lite's in-process gRPC server logs a traceback for RPCs it does not
    # implement (AllocTimestamp, asked while an index is created); the client
    # copes, and real failures reach the caller as exceptions.
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
