"""A production cluster speaks SASL/SCRAM over TLS: sonicbus' own clients (producer, consumer,
admin, the FastStream broker of the query service) and its command line work against one,
a wrong password fails with a message that says so, and the password appears in no log and
not in `sonicbus config`.

The broker is real (tests/fixtures/secure_kafka.py): its certificate is signed by a CA the
test makes, its only listener is SASL_SSL, its SCRAM users are created by the KRaft storage
format. Nothing here touches the shared PLAINTEXT test broker.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from pipeline.bus import KafkaRefused, make_admin, make_broker, make_consumer, make_producer
from pipeline.topics import ensure_topics
from tests.fixtures.cli import sonicbus
from tests.fixtures.secure_kafka import SecureBroker
from tests.fixtures.services import base_settings

pytestmark = pytest.mark.timeout(180)


async def test_sonicbus_works_over_sasl_scram_and_tls(secure_broker: SecureBroker) -> None:
    settings = base_settings(kafka=secure_broker.kafka())
    topics = settings.topics
    created = await ensure_topics(settings.kafka, topics)  # the admin client
    assert topics.tracks in created

    producer = make_producer(settings.kafka, role="secure-test")
    await producer.start()
    try:
        await producer.send_and_wait(topics.tracks, b'{"hello": "tls"}', key=b"track-1")
    finally:
        await producer.stop()
    # The query service's FastStream broker publishes on the same connection options.
    async with make_broker(settings.kafka) as broker:
        await broker.publish(b'{"hello": "faststream"}', topic=topics.tracks, key=b"track-2")

    consumer = make_consumer(settings.kafka, topics.tracks, group_id=topics.group("secure"))
    await consumer.start()
    try:
        records = []
        async with asyncio.timeout(60):
            while len(records) < 2:
                batch = await consumer.getmany(timeout_ms=1000)
                records += [r for rs in batch.values() for r in rs]
        await consumer.commit()
    finally:
        await consumer.stop()
    assert sorted(r.key for r in records) == [b"track-1", b"track-2"]
    assert sorted(r.value for r in records) == [b'{"hello": "faststream"}', b'{"hello": "tls"}']

    # The command line, configured as a user configures it (SONICBUS_KAFKA__*), with every
    # client's debug logs on: the group's lag is read, and the password is printed nowhere.
    env = secure_broker.env()
    lag = await sonicbus(settings, "--log-level", "DEBUG", "lag", topics.group("secure"),
                         "--json", **env)  # fmt: skip
    assert lag.returncode == 0, lag.stderr[-3000:]
    report = json.loads(lag.stdout.strip().splitlines()[-1])
    partitions = [p for g in report["groups"] for p in g["partitions"]]
    assert {p["lag"] for p in partitions if p["committed"] is not None} == {0}
    assert secure_broker.password not in lag.stdout + lag.stderr

    shown = await sonicbus(settings, "config", **env)
    assert shown.returncode == 0, shown.stderr
    kafka = json.loads(shown.stdout)["kafka"]
    assert kafka["sasl_username"] == "sonicbus" and kafka["sasl_password"] == "**********"
    assert kafka["security_protocol"] == "SASL_SSL" and kafka["sasl_mechanism"] == "SCRAM-SHA-512"
    assert secure_broker.password not in shown.stdout + shown.stderr


async def test_a_wrong_password_fails_with_a_clear_error(secure_broker: SecureBroker) -> None:
    wrong = "not-the-password-" + secure_broker.password[:4]
    settings = base_settings(kafka=secure_broker.kafka(password=wrong))
    admin = make_admin(settings.kafka)
    with pytest.raises(KafkaRefused, match="refused user 'sonicbus': SCRAM-SHA-512 authentication"):
        await admin.start()
    await admin.close()
    # Without the CA that signed the broker's certificate, TLS is what fails, and it says so.
    untrusted = make_admin(secure_broker.kafka(ssl_cafile=None))
    with pytest.raises(KafkaRefused, match=r"CERTIFICATE_VERIFY_FAILED.*kafka\.ssl_cafile"):
        await untrusted.start()
    await untrusted.close()

    lag = await sonicbus(settings, "lag", **secure_broker.env(password=wrong))
    assert lag.returncode != 0
    said = lag.stdout + lag.stderr
    assert "authentication failed" in said.lower(), said[-3000:]
    assert "sonicbus" in said  # the user it tried
    assert wrong not in said and secure_broker.password not in said
