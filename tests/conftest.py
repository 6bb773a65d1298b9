"""The test suite's shared fixtures and helpers live in tests/fixtures/ (its __init__ says
what each module holds); they are registered here as pytest plugins, so every test module
can ask for a fixture without importing it.

Dependencies first: a plugin that imports another finds it already registered (and its
asserts rewritten).
"""

import pytest

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.bus",
    "tests.fixtures.audio",
    "tests.fixtures.catalog",
    "tests.fixtures.cli",
    "tests.fixtures.kafka_tool",
    "tests.fixtures.models",
    "tests.fixtures.navidrome",
    "tests.fixtures.secure_kafka",
    "tests.fixtures.navidrome_plugin",
    "tests.fixtures.library",
    "tests.fixtures.browser",
    "tests.fixtures.cluster",
    "tests.fixtures.netns",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--faults",
        action="store_true",
        help="also run the long fault-injection tests (marker `faults`; infra/test.sh --faults)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: a long fault-injection test, run only with --faults"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The `faults` tests (minutes each, a three-broker cluster) only with --faults."""
    if config.getoption("--faults"):
        return
    skip = pytest.mark.skip(reason="a long fault test: run with --faults (infra/test.sh --faults)")
    for item in items:
        if "faults" in item.keywords:
            item.add_marker(skip)
