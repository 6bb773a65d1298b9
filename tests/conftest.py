"""The test suite's shared fixtures and helpers live in tests/fixtures/ (its __init__ says
what each module holds); they are registered here as pytest plugins, so every test module
can ask for a fixture without importing it.

Dependencies first: a plugin that imports another finds it already registered (and its
asserts rewritten).
"""

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.bus",
    "tests.fixtures.audio",
    "tests.fixtures.catalog",
    "tests.fixtures.cli",
    "tests.fixtures.kafka_tool",
    "tests.fixtures.models",
    "tests.fixtures.navidrome",
    "tests.fixtures.navidrome_plugin",
    "tests.fixtures.library",
    "tests.fixtures.browser",
]
