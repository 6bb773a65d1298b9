"""The sonicbus processes a bench runs as a user would (`python -m pipeline.cli ...`): each
with its log in a file (JSON lines), its resident memory read from /proc, stopped with
SIGTERM the way an operator stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import Settings


def rss_mib(pid: int) -> float | None:
    """Resident memory of a running process, from /proc (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


@dataclass
class Service:
    """One sonicbus process of the soak, its log in a file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    rss: dict[str, float | None] = field(default_factory=dict)

    def sample(self, moment: str) -> None:
        self.rss[moment] = rss_mib(self.process.pid)

    def log_levels(self) -> tuple[dict[str, int], list[str]]:
        """Lines per level, and the first few distinct ERROR messages."""
        levels: dict[str, int] = {}
        errors: list[str] = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
                level = entry["level"]
            except (ValueError, KeyError, TypeError):
                level = "other"  # not a JSON log line (a traceback printed by a library)
            else:
                message = f"{entry.get('logger')}: {entry.get('msg')}"[:300]
                if level in ("error", "critical") and message not in errors and len(errors) < 3:
                    errors.append(message)
            levels[level] = levels.get(level, 0) + 1
        return levels, errors


def start_service(settings: Settings, name: str, args: list[str], logs: Path) -> Service:
    """`sonicbus ARGS` on the settings' broker, topics and Milvus server, logging JSON
    (WARNING and above) to `logs/NAME.log`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONICBUS_")}
    env.update(
        SONICBUS_HOME=str(settings.home),
        SONICBUS_CACHE_DIR=str(settings.cache_dir),
        SONICBUS_KAFKA__BOOTSTRAP_SERVERS=settings.kafka.bootstrap_servers,
        SONICBUS_TOPICS__PREFIX=settings.topics.prefix,
        SONICBUS_TOPICS__GROUP_PREFIX=settings.topics.group_prefix,
        SONICBUS_TOPICS__PARTITIONS=str(settings.topics.partitions),
        SONICBUS_MILVUS__URI=settings.milvus_uri,
        SONICBUS_MILVUS__COLLECTION_PREFIX=settings.milvus.collection_prefix,
        SONICBUS_EMBED__DEVICE="cpu",
        SONICBUS_LOG_FORMAT="json",
        SONICBUS_LOG_LEVEL="WARNING",
    )
    log_path = logs / f"{name}.log"
    root = Path(__file__).resolve().parent.parent
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *args],
            env=env,
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Service(name, process, log_path)


def stop_services(services: list[Service]) -> dict[str, int | None]:
    """SIGTERM every one (they finish the work in hand), then wait; their exit codes."""
    for service in services:
        if service.process.poll() is None:
            service.process.send_signal(signal.SIGTERM)
    codes: dict[str, int | None] = {}
    for service in services:
        try:
            codes[service.name] = service.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            service.process.kill()
            codes[service.name] = service.process.wait(timeout=10)
    return codes
