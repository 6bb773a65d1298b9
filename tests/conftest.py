"""Shared fixtures: the real Kafka broker and real Milvus every integration test uses.

The broker and the Milvus server are started through the same `infra/`
scripts users run (reused when `infra/test.sh` already started them). Each
test gets its own topic prefix, so tests never see each other's records.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from pipeline import infra
from pipeline.bus import make_producer
from pipeline.config import KafkaSettings, MilvusSettings, Settings, TopicSettings
from pipeline.store import VectorStore
from pipeline.topics import ensure_topics

TEST_HOME = Path(os.environ.get("SONICBUS_TEST_HOME", "/tmp/sonicbus-test"))
KAFKA_PORT = int(os.environ.get("SONICBUS_TEST_KAFKA_PORT", "39092"))
MILVUS_PORT = int(os.environ.get("SONICBUS_TEST_MILVUS_PORT", "39530"))


def base_settings(**overrides: object) -> Settings:
    """Settings for tests: loopback test ports, a scratch home, nothing from the user's env."""
    run = f"t{uuid.uuid4().hex[:10]}."
    values: dict[str, object] = {
        "home": TEST_HOME,
        "kafka": KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{KAFKA_PORT}", local_port=KAFKA_PORT, local_heap="512m"
        ),
        "milvus": MilvusSettings(local_port=MILVUS_PORT),
        # Topics and consumer groups both carry the test's own prefix: group ids are
        # cluster-wide, and a test resetting `embed-musicnn` must not meet another's member.
        "topics": TopicSettings(prefix=run, group_prefix=run, partitions=3),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[str]:
    """A real single-node KRaft broker on loopback (started once per session)."""
    settings = base_settings()
    already_running = infra.port_open(KAFKA_PORT)
    infra.start_kafka(settings)
    yield settings.kafka.bootstrap_servers
    if not already_running:
        infra.stop_kafka(settings)


@pytest.fixture(scope="session")
def milvus_server() -> Iterator[str]:
    """The embedded Milvus standalone server (PyPI `milvus`), started once per session."""
    settings = base_settings()
    already_running = infra.port_open(MILVUS_PORT)
    if not already_running:
        # Test data is disposable, and a server recovering a big old data folder
        # can take minutes to answer: start from an empty one.
        shutil.rmtree(TEST_HOME / f"milvus-server-{MILVUS_PORT}", ignore_errors=True)
    infra.start_milvus_server(settings)
    yield f"http://127.0.0.1:{MILVUS_PORT}"
    if not already_running:
        infra.stop_milvus_server(settings)


@pytest.fixture
async def settings(kafka_broker: str) -> Settings:
    """Settings with a fresh topic prefix whose topics exist on the real broker."""
    s = base_settings()
    await ensure_topics(s.kafka, s.topics)
    return s


@pytest.fixture
async def producer(settings: Settings) -> AsyncIterator[object]:
    p = make_producer(settings.kafka, role="test")
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
def lite_store(tmp_path: Path) -> Iterator[VectorStore]:
    store = VectorStore(MilvusSettings(), str(tmp_path / "milvus.db"))
    yield store
    store.close()


@pytest.fixture
def server_store(milvus_server: str) -> Iterator[VectorStore]:
    store = VectorStore(
        MilvusSettings(collection_prefix=f"t{uuid.uuid4().hex[:8]}_"), milvus_server
    )
    yield store
    for name in store.list_collections():
        if name.startswith(store.settings.collection_prefix):
            store.drop_collection(name)
    store.close()


@pytest.fixture(params=["lite", "server"])
def store(request: pytest.FixtureRequest) -> VectorStore:
    """Every store test runs on Milvus Lite and on the real Milvus server."""
    name = "lite_store" if request.param == "lite" else "server_store"
    return request.getfixturevalue(name)
