"""The one place that builds Kafka clients from settings.

Everything that talks to the broker (producers, consumers, the admin client,
the FastStream broker of the query service) gets its connection options here,
so TLS/SASL or a different cluster is one settings change.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
)
from aiokafka.structs import ConsumerRecord

from pipeline.config import KafkaSettings
from pipeline.logs import take_over_logs


class KafkaRefused(KafkaConnectionError):
    """The brokers answer but refuse sonicbus (a wrong password, a certificate not trusted):
    the message says which, and which setting to check. A KafkaConnectionError, so every
    handler of an unreachable broker handles it too."""


async def explain_refusal(kafka: KafkaSettings) -> KafkaRefused | None:
    """Why a client could not bootstrap, when the brokers refused it rather than being away.

    aiokafka says only "Unable to bootstrap from [...]" (the cause goes to its log): one more
    connection to each bootstrap server, with the same options, finds out. None when no
    server refused (they are down, or unreachable)."""
    options = client_options(kafka, "check")
    for address in kafka.bootstrap_servers.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            conn = await create_conn(
                host.strip("[]"), int(port), client_id=options["client_id"],
                request_timeout_ms=kafka.request_timeout_ms,
                ssl_context=options.get("ssl_context"),
                security_protocol=kafka.security_protocol,
                sasl_mechanism=options.get("sasl_mechanism", "PLAIN"),
                sasl_plain_username=options.get("sasl_plain_username"),
                sasl_plain_password=options.get("sasl_plain_password"),
            )  # fmt: skip
        except (SaslAuthenticationFailed, AuthenticationFailedError):
            return KafkaRefused(
                f"Kafka at {address.strip()} refused user {kafka.sasl_username!r}: "
                f"{kafka.sasl_mechanism} authentication failed; check kafka.sasl_username and "
                "kafka.sasl_password (SONICBUS_KAFKA__SASL_PASSWORD)"
            )
        except Exception as exc:
            tls = next((e for e in _causes(exc) if isinstance(e, ssl.SSLError)), None)
            if tls is None:
                continue
            return KafkaRefused(
                f"TLS with Kafka at {address.strip()} failed ({tls.reason or tls}); check "
                "kafka.ssl_cafile (the CA that signed the brokers' certificates) and "
                "kafka.security_protocol"
            )
        else:
            conn.close()
    return None


def _causes(error: BaseException | None) -> list[BaseException]:
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


class _NamesRefusals:
    """start() raises a KafkaRefused that names the cause, in place of "Unable to bootstrap"
    when the brokers refused the client."""

    _sonicbus_kafka: KafkaSettings

    async def start(self) -> None:
        try:
            await super().start()  # type: ignore[misc]
        except KafkaConnectionError as exc:
            refusal = await explain_refusal(self._sonicbus_kafka)
            if refusal is None:
                raise
            raise refusal from exc


class SonicbusProducer(_NamesRefusals, AIOKafkaProducer):
    def __init__(self, kafka: KafkaSettings, **options: Any) -> None:
        super().__init__(**options)
        self._sonicbus_kafka = kafka


class SonicbusConsumer(_NamesRefusals, AIOKafkaConsumer):
    def __init__(self, kafka: KafkaSettings, *topics: str, **options: Any) -> None:
        super().__init__(*topics, **options)
        self._sonicbus_kafka = kafka


class SonicbusAdmin(_NamesRefusals, AIOKafkaAdminClient):
    def __init__(self, kafka: KafkaSettings, **options: Any) -> None:
        super().__init__(**options)
        self._sonicbus_kafka = kafka


def client_options(kafka: KafkaSettings, role: str) -> dict[str, Any]:
    """Connection options shared by every aiokafka client."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": f"{kafka.client_id}-{role}",
        "request_timeout_ms": kafka.request_timeout_ms,
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl.create_default_context(
            cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None
        )
    if kafka.security_protocol.startswith("SASL"):
        if kafka.sasl_mechanism is None or kafka.sasl_username is None:
            raise ValueError(
                f"security_protocol {kafka.security_protocol} needs kafka.sasl_mechanism "
                "and kafka.sasl_username (SONICBUS_KAFKA__SASL_MECHANISM, ...)"
            )
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else ""
        )
    return options


def make_producer(kafka: KafkaSettings, role: str = "producer") -> AIOKafkaProducer:
    """An idempotent producer that waits for all in-sync replicas: nothing lost on retry."""
    return SonicbusProducer(
        kafka,
        **client_options(kafka, role),
        acks="all",
        enable_idempotence=True,
        max_request_size=kafka.max_message_bytes,
        linger_ms=5,
    )


def make_consumer(
    kafka: KafkaSettings,
    *topics: str,
    group_id: str | None,
    role: str = "consumer",
    **overrides: Any,
) -> AIOKafkaConsumer:
    """A consumer that never auto-commits: callers commit after the work is durable."""
    options: dict[str, Any] = {
        **client_options(kafka, role),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": max(kafka.max_message_bytes, 1_048_576),
        "isolation_level": "read_committed",
    }
    options.update(overrides)
    return SonicbusConsumer(kafka, *topics, **options)


async def read_to_end(
    consumer: AIOKafkaConsumer, partitions: Sequence[TopicPartition], max_records: int | None = None
) -> AsyncIterator[ConsumerRecord[bytes, bytes]]:
    """Every record of `partitions` from their beginning to their end offsets at call time.

    How a compacted topic (tracks, control, job events) becomes its current state: the
    caller applies each record in order. The consumer is assigned the partitions and,
    after the last record, stays there: it can go on following what comes next.
    """
    consumer.assign(list(partitions))
    end = await consumer.end_offsets(list(partitions))
    await consumer.seek_to_beginning(*partitions)
    remaining = {tp for tp in partitions if end[tp] > 0}
    while remaining:
        batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=max_records)
        for records in batch.values():
            for record in records:
                yield record
        for tp in list(remaining):
            if await consumer.position(tp) >= end[tp]:
                remaining.discard(tp)


def make_admin(kafka: KafkaSettings) -> AIOKafkaAdminClient:
    return SonicbusAdmin(kafka, **client_options(kafka, "admin"))


def make_broker(kafka: KafkaSettings, **overrides: Any) -> Any:
    """The FastStream Kafka broker (request/reply services) on the same connection options."""
    from faststream.kafka import KafkaBroker
    from faststream.security import SASLPlaintext, SASLScram256, SASLScram512

    take_over_logs("faststream")  # its import gave it a coloured stdout handler of its own
    security = None
    options = client_options(kafka, "faststream")
    if kafka.security_protocol.startswith("SASL"):
        cls = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256, "SCRAM-SHA-512": SASLScram512}
        security = cls[kafka.sasl_mechanism or "PLAIN"](
            username=options["sasl_plain_username"],
            password=options["sasl_plain_password"],
            ssl_context=options.get("ssl_context"),
        )
    elif kafka.security_protocol == "SSL":
        from faststream.security import BaseSecurity

        security = BaseSecurity(ssl_context=options["ssl_context"])
    return KafkaBroker(
        # A list: FastStream hands a string to aiokafka as one host, so "a:9092,b:9092"
        # (any cluster of more than one broker) could not be reached at all.
        [server.strip() for server in kafka.bootstrap_servers.split(",") if server.strip()],
        client_id=options["client_id"],
        request_timeout_ms=kafka.request_timeout_ms,
        security=security,
        # As make_producer: FastStream's default (acks=1) loses a reply or a request
        # acknowledged by a leader that dies before a follower copied it.
        acks="all",
        enable_idempotence=True,
        # Its access logger would get a handler of its own too; this one propagates.
        logger=logging.getLogger("faststream.sonicbus"),
        **overrides,
    )
