"""A Milvus outage in the logs: said once when it starts, once when it ends, in our format.

pymilvus logs every failed call with its full traceback through a stderr handler of its
own (2,400+ lines for a 30 s cut on one embedder). Here a Milvus Lite server of the test's
own (in this process, on its own port: the shared Milvus on 39530 is never touched) is
stopped and started again under a `MilvusConnection`. FastStream, which gives its
loggers a coloured handler of its own, comes out in our format too.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from milvus_lite.adapter.grpc.server import start_server_in_thread

from pipeline.bus import make_broker
from pipeline.config import KafkaSettings, MilvusSettings
from pipeline.logs import JsonFormatter, StoreNoise, kafka_noise, store_noise
from pipeline.store.connection import MilvusConnection, StoreUnavailable


class Lines(logging.Handler):
    """The root handler of `setup_logging(fmt="json")`, writing to a list."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.setFormatter(JsonFormatter())
        self.addFilter(kafka_noise)
        self.addFilter(store_noise)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def service_log() -> Iterator[Lines]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    lines = Lines()
    root.handlers[:] = [lines]
    root.setLevel(logging.INFO)
    yield lines
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_milvus_outage_is_one_line_when_it_starts_and_one_when_it_ends(
    tmp_path: Path, service_log: Lines
) -> None:
    server, db, port = start_server_in_thread(str(tmp_path / "milvus.db"))
    milvus = MilvusConnection(MilvusSettings(), f"http://127.0.0.1:{port}")
    try:
        assert milvus.ping() == []
        server.stop(grace=0)
        db.close()
        for _ in range(40):  # an embedder's retries while Milvus is away
            with pytest.raises(StoreUnavailable):
                milvus.ping()
            logging.getLogger("pipeline.consumers.worker").warning(
                "batch of 2 not processed (Milvus at %s: <MilvusException: (code=2, "
                "message=Fail connecting to server>); retrying in 1.0 s",
                milvus.uri,
            )
        server, db, _ = start_server_in_thread(str(tmp_path / "milvus.db"), port=port)
        for _ in range(100):  # the client reconnects within a second or two
            try:
                milvus.ping()
                break
            except StoreUnavailable:
                time.sleep(0.2)
        else:
            pytest.fail("the client never reconnected")
    finally:
        milvus.close()
        server.stop(grace=0)
        db.close()

    records = [json.loads(line) for line in service_log.lines]  # every line is our JSON
    assert not any("Traceback" in line for line in service_log.lines)
    down = [r for r in records if "Milvus is unreachable" in r["msg"]]
    back = [r for r in records if "answers again" in r["msg"]]
    assert len(down) == 1 and len(back) == 1, service_log.lines
    assert "Fail connecting to server" in down[0]["msg"]
    assert back[0]["folded"] >= 80  # pymilvus' errors and the worker's warnings, counted
    assert f"Milvus at {milvus.uri} answers again" in back[0]["msg"]
    assert len(records) == 2, service_log.lines
    for name in ("pymilvus", "pymilvus.milvus_client", "pymilvus.decorators"):
        assert logging.getLogger(name).handlers == []  # pymilvus' own stderr handler is gone
        assert logging.getLogger(name).propagate


def test_other_errors_are_untouched_and_pymilvus_tracebacks_cut() -> None:
    noise = StoreNoise()
    navidrome = logging.makeLogRecord({
        "name": "pipeline.navidrome", "levelno": logging.WARNING, "levelname": "WARNING",
        "msg": "Navidrome at http://x: [Errno 111] Connection refused",
    })  # fmt: skip
    assert noise.filter(navidrome) and not noise.in_outage
    assert navidrome.getMessage() == "Navidrome at http://x: [Errno 111] Connection refused"

    missing = logging.makeLogRecord({
        "name": "pymilvus.decorators", "levelno": logging.ERROR, "levelname": "ERROR",
        "msg": "RPC error: [describe_collection], <MilvusException: (code=100, message=can't "
        "find collection)>, <elapsed:1.0ms>\nTraceback:\nTraceback (most recent call last):\n",
    })  # fmt: skip
    assert noise.filter(missing) and not noise.in_outage
    assert missing.getMessage().endswith("<elapsed:1.0ms>")


def test_faststream_lines_come_out_as_ours_and_its_chatter_stays_out(service_log: Lines) -> None:
    """`sonicbus --json-logs up` printed FastStream's coloured "assigned to partitions"
    lines between its JSON lines; making a broker hands FastStream's loggers to ours."""
    make_broker(KafkaSettings())
    for name in ("faststream", "faststream.sonicbus"):
        logger = logging.getLogger(name)
        assert logger.propagate and not logger.handlers, name
    logging.getLogger("faststream.sonicbus").info("Consumer x assigned to partitions: (...)")
    logging.getLogger("faststream").warning("Consumer in group g has no partition assignments")
    [line] = service_log.lines
    record = json.loads(line)
    assert record["level"] == "warning" and "no partition assignments" in record["msg"]
