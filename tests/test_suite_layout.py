"""The tests and benches keep the shape tests/fixtures/__init__.py describes: shared code
lives in tests/fixtures/ (fixtures registered as plugins), no test module imports another,
nothing under bench/ imports the tests, and every bench has a --smoke run."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_test_module_imports_another_or_the_conftest() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(
            name
            for name in imported_modules(path)
            if name.startswith(("tests.test_", "tests.conftest"))
        )
        for path in (REPO / "tests").rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_fixtures_come_through_pytest_plugins_not_imports() -> None:
    fixture_imports = [
        str(path.relative_to(REPO))
        for path in (REPO / "tests").rglob("*.py")
        if path != Path(__file__) and "noqa: F401" in path.read_text(encoding="utf-8")
    ]
    assert fixture_imports == []


def test_benches_import_no_tests_and_all_have_a_smoke_run() -> None:
    benches = sorted(
        path
        for path in (REPO / "bench").glob("*.py")
        if 'if __name__ == "__main__":' in path.read_text(encoding="utf-8")
    )
    assert len(benches) >= 7
    for path in (REPO / "bench").glob("*.py"):
        assert not any(n.split(".")[0] == "tests" for n in imported_modules(path)), path.name
    without_smoke = [p.name for p in benches if "smoke.add_flag(parser)" not in p.read_text()]
    assert without_smoke == []
