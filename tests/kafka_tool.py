"""Kafka's own consumer-group tool (`kafka-consumer-groups`), run from the jars infra/ fetches.

Tests compare sonicbus' lag figures with what this prints for the same group.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pipeline.config import Settings

TOOL_CLASS = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"


def kafka_libs(settings: Settings) -> Path:
    return Path(os.environ.get("SONICBUS_CACHE_DIR", settings.cache_dir)) / "kafka" / "libs"


async def consumer_groups_tool(settings: Settings, *args: str) -> tuple[str, str]:
    """Run `kafka-consumer-groups --bootstrap-server ... ARGS`; (stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        "java",
        "-Xmx256m",
        "-cp",
        f"{kafka_libs(settings)}/*",
        TOOL_CLASS,
        "--bootstrap-server",
        settings.kafka.bootstrap_servers,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, err.decode()[-2000:]
    return out.decode(), err.decode()


def none_if_dash(text: str) -> str | None:
    return None if text == "-" else text


async def describe_offsets(settings: Settings, group: str) -> dict[tuple[str, int], dict]:
    """`--describe --group G`: its rows keyed by (topic, partition), values as printed."""
    out, _ = await consumer_groups_tool(settings, "--describe", "--group", group)
    rows: dict[tuple[str, int], dict] = {}
    for line in out.splitlines():
        cells = line.split()
        if len(cells) != 9 or cells[0] != group:
            continue
        _, topic, partition, current, end, lag, consumer, host, client = cells
        rows[(topic, int(partition))] = {
            "committed": none_if_dash(current),
            "log_end": none_if_dash(end),
            "lag": none_if_dash(lag),
            "consumer_id": none_if_dash(consumer),
            "host": none_if_dash(host),
            "client_id": none_if_dash(client),
        }
    return rows


async def describe_state(settings: Settings, group: str) -> tuple[str, int]:
    """`--describe --state --group G`: (STATE, #MEMBERS)."""
    out, _ = await consumer_groups_tool(settings, "--describe", "--state", "--group", group)
    for line in out.splitlines():
        cells = line.split()
        if cells and cells[0] == group:
            return cells[-2], int(cells[-1])
    raise AssertionError(f"no state line for {group} in:\n{out}")
