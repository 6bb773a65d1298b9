"""A new user's `sonicbus up` outlives its broker: `kill -9` the local Kafka broker that `up`
started, drop a song into the music folder while it is gone, and `up` restarts the broker by
itself, says once that it was unreachable and once that it is back (and after how long), and
embeds the song. The outage does not flood the terminal: the client libraries' reconnect
errors are folded into those two lines.

`up` here starts its own broker (own port and home), so the shared test broker is untouched;
Milvus is the real server, so the test can count the rows while `up` runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pipeline import infra
from pipeline.config import MilvusSettings, Settings
from pipeline.store import VectorStore
from tests.fixtures.audio import write_song
from tests.fixtures.cli import cli_env, sonicbus_command
from tests.fixtures.navidrome import free_port, free_port_pair
from tests.fixtures.services import base_settings, wait_for

pytestmark = pytest.mark.timeout(240)


class Output:
    """The lines a process prints, read by a thread as they come (the pipe never fills)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.reader.start()

    def _read(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for line in iter(process.stdout.readline, b""):
            self.lines.append(line.decode(errors="replace"))

    def text(self) -> str:
        return "".join(self.lines)


async def test_up_restarts_the_broker_it_started_and_embeds_what_came_meanwhile(
    milvus_server: str, tmp_path: Path
) -> None:
    settings = base_settings()
    music = tmp_path / "music"
    music.mkdir()
    for i in range(2):
        write_song(music / f"{i:02d} Before.flac", seconds=4, seed=600 + i)
    home = tmp_path / "home"
    port = free_port_pair()
    prefix = f"upkill_{settings.topics.prefix.strip('.')}_"
    env = cli_env(
        settings,
        160,
        SONICBUS_HOME=str(home),  # its own broker data
        SONICBUS_KAFKA__LOCAL_PORT=str(port),
        SONICBUS_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{port}",
        SONICBUS_MILVUS__URI=milvus_server,
        SONICBUS_MILVUS__COLLECTION_PREFIX=prefix,
        SONICBUS_EMBED__DEVICE="cpu",
        SONICBUS_HTTP__PORT=str(free_port(39640)),
    )
    store = VectorStore(MilvusSettings(collection_prefix=prefix), milvus_server)
    collection = store.collection_name("musicnn")
    pidfile = home / f"kafka-{port}" / "kafka.pid"

    def rows() -> int:
        return store.count(collection) if store.has_collection(collection) else 0

    job = subprocess.Popen(
        sonicbus_command("up", str(music)), env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    output = Output(job)
    try:
        await wait_for(lambda: rows() == 2, timeout=120)
        broker_pid = int(pidfile.read_text())
        os.kill(broker_pid, signal.SIGKILL)  # as a crash or the OOM killer would
        killed_at = time.monotonic()
        write_song(music / "02 Meanwhile.flac", seconds=4, seed=602)
        await wait_for(lambda: "unreachable" in output.text(), timeout=30)
        assert not infra.port_open(port) or int(pidfile.read_text()) != broker_pid

        await wait_for(lambda: rows() == 3, timeout=120)
        await wait_for(lambda: re.search(r"back after \d+ s", output.text()) is not None, 30)
        assert int(pidfile.read_text()) != broker_pid  # a new broker, started by `up`
        titles = {row.title for row in store.get(collection, _ids(store, collection)).values()}
        assert "02 Meanwhile" in titles
        print(f"embedded the song added during the outage {time.monotonic() - killed_at:.0f} s "
              "after the kill")  # fmt: skip

        job.send_signal(signal.SIGINT)
        job.wait(timeout=90)
        output.reader.join(timeout=10)
        text = output.text()
        assert job.returncode == 0, text[-4000:]
        lines = text.splitlines()
        unreachable = [line for line in lines if "unreachable" in line]
        back = [line for line in lines if re.search(r"back after \d+ s", line)]
        errors = [line for line in lines if re.search(r"\bERROR\b", line)]
        print("\n".join([*unreachable, *back, f"{len(errors)} ERROR lines", *errors]))
        assert len(unreachable) == 1, text[-4000:]
        assert len(back) == 1, text[-4000:]
        assert len(errors) <= 5, text[-6000:]
        # The broker `up` restarted is still the one `up` owns: Ctrl+C stops it.
        assert f"stopped the local Kafka broker (127.0.0.1:{port})" in text
        assert not infra.port_open(port)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait(timeout=30)
        (tmp_path / "up.log").write_text(output.text())  # for a failure's post-mortem
        if infra.port_open(port) or pidfile.exists():  # never leave a broker behind
            infra.stop_kafka(Settings(home=home, kafka={"local_port": port}))
        store.drop_collection(collection)
        store.close()


def _ids(store: VectorStore, collection: str) -> list[str]:
    hits = store.search(collection, [[1.0] * 1200], limit=10)[0]  # MusiCNN, both heads
    return [hit.track_id for hit in hits]
