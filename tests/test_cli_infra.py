"""`sonicbus infra up|status|down` as a user runs them, on a broker of their own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.infra import port_open
from tests.fixtures.navidrome import free_port_pair


def sonicbus(home: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SONICBUS_HOME": str(home),
        "SONICBUS_KAFKA__LOCAL_PORT": str(port),
        "SONICBUS_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
        "SONICBUS_MILVUS__LOCAL_PORT": str(port + 1),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def processes_using(folder: Path) -> list[str]:
    """Command lines of live processes that mention `folder`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(folder) in cmdline:
            found.append(cmdline)
    return found


def test_infra_up_status_down_leaves_nothing_behind(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # Free now (a fixed port can be taken as the local end of any loopback connection).
    port = free_port_pair()
    try:
        up = sonicbus(home, port, "infra", "up")
        assert up.returncode == 0, up.stdout + up.stderr
        assert port_open(port)

        status = sonicbus(home, port, "infra", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        out = status.stdout
        assert "kafka" in out and "milvus" in out
        assert out.count("reachable") >= 2 and "unreachable" not in out
        for topic in ("tracks", "embeddings", "dlq", "requests", "replies"):
            assert f"sonicbus.{topic}" in out
        assert "Milvus Lite" in out

        down = sonicbus(home, port, "infra", "down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert not port_open(port)
        assert processes_using(home) == []

        after = sonicbus(home, port, "infra", "status")
        assert after.returncode == 1
        assert "unreachable" in after.stdout
    finally:
        sonicbus(home, port, "infra", "down")
