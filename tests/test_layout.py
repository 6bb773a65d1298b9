"""The code keeps the shape docs/architecture.md describes.

The import layers and the absence of import circles are checked by
`lint-imports` (contracts in `.importlinter`, run by infra/test.sh); this
file checks what a contract cannot say: every module is placed in a layer,
and no module grows past the size a reader can hold in mind.
"""

from __future__ import annotations

import configparser
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAX_LINES = 500


def source_modules() -> list[Path]:
    return sorted(p for root in ("pipeline", "models") for p in (REPO / root).rglob("*.py"))


def test_no_module_is_over_500_lines() -> None:
    too_long = {
        str(path.relative_to(REPO)): n
        for path in source_modules()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not too_long, f"split these modules (over {MAX_LINES} lines): {too_long}"


def test_every_part_of_pipeline_has_a_layer() -> None:
    config = configparser.ConfigParser()
    config.read(REPO / ".importlinter")
    layers = config["importlinter:contract:layers"]["layers"]
    placed = {
        name.strip() for line in layers.splitlines() for name in line.replace("|", ":").split(":")
    }
    parts = {
        f"pipeline.{path.stem if path.is_file() else path.name}"
        for path in (REPO / "pipeline").iterdir()
        if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").is_file()
    }
    unplaced = sorted(parts - placed)
    assert not unplaced, f"add these to a layer in .importlinter: {unplaced}"
