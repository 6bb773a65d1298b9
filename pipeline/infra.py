"""Local services for development, tests and the embedded default.

The shell scripts in `infra/` own starting and stopping (tests, CI and
developers use the same scripts); this module runs them with the ports and
folders from the settings, and answers "is everything reachable?".
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import Settings
from pipeline.errors import Unavailable
from pipeline.store import StoreUnavailable, VectorStore
from pipeline.topics import list_topics

INFRA_DIR = Path(__file__).resolve().parent.parent / "infra"


class InfraError(Unavailable):
    """A local service could not be started or stopped; the message says why."""


def script_env(settings: Settings) -> dict[str, str]:
    """Environment for the infra scripts, derived from the settings."""
    env = dict(os.environ)
    env.update(
        {
            "SONICBUS_HOME": str(settings.home),
            "SONICBUS_CACHE_DIR": str(settings.cache_dir),
            "SONICBUS_KAFKA__LOCAL_PORT": str(settings.kafka.local_port),
            "SONICBUS_KAFKA__LOCAL_HEAP": settings.kafka.local_heap,
            "SONICBUS_MILVUS__LOCAL_PORT": str(settings.milvus.local_port),
            "SONICBUS_NAVIDROME__LOCAL_PORT": str(settings.navidrome.local_port),
            "SONICBUS_PYTHON": sys.executable,
        }
    )
    if settings.navidrome.music_folder is not None:
        env["SONICBUS_NAVIDROME__MUSIC_FOLDER"] = str(settings.navidrome.music_folder)
    return env


def run_script(name: str, settings: Settings) -> None:
    script = INFRA_DIR / name
    if not script.is_file():
        raise InfraError(f"{script} is missing: sonicbus must run from its source checkout")
    result = subprocess.run(
        ["bash", str(script)],
        env=script_env(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise InfraError(f"{name} failed:\n{result.stderr.strip()}")


def start_kafka(settings: Settings) -> None:
    run_script("kafka-start.sh", settings)


def stop_kafka(settings: Settings) -> None:
    run_script("kafka-stop.sh", settings)


def start_milvus_server(settings: Settings) -> None:
    run_script("milvus-start.sh", settings)


def stop_milvus_server(settings: Settings) -> None:
    run_script("milvus-stop.sh", settings)


def local_kafka_configured(settings: Settings) -> bool:
    """True when the settings point at the broker `infra up` manages."""
    return settings.kafka.bootstrap_servers in {
        f"127.0.0.1:{settings.kafka.local_port}",
        f"localhost:{settings.kafka.local_port}",
    }


@dataclass
class ServiceStatus:
    name: str
    reachable: bool
    address: str
    detail: str = ""
    items: dict[str, int] = field(default_factory=dict)


async def kafka_status(settings: Settings) -> ServiceStatus:
    address = settings.kafka.bootstrap_servers
    try:
        topics = await list_topics(settings.kafka)
    except Exception as exc:
        return ServiceStatus("kafka", False, address, f"{type(exc).__name__}: {exc}")
    return ServiceStatus("kafka", True, address, f"{len(topics)} topics", topics)


def milvus_status(settings: Settings, store: VectorStore | None = None) -> ServiceStatus:
    uri = settings.milvus_uri
    kind = "Milvus Lite" if not uri.startswith(("http://", "https://")) else "Milvus server"
    own = store is None
    if store is None:
        settings.home.mkdir(parents=True, exist_ok=True)
        store = VectorStore(settings.milvus, uri)
    try:
        counts = {name: store.count(name) for name in store.list_collections()}
    except (StoreUnavailable, Exception) as exc:
        return ServiceStatus("milvus", False, uri, f"{kind}: {type(exc).__name__}: {exc}")
    finally:
        if own:
            store.close()
    return ServiceStatus("milvus", True, uri, f"{kind}, {len(counts)} collections", counts)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on host:port."""
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0
