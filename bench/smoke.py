"""`--smoke`: every bench's tiny run, seconds long, on the services the tests use.

infra/test.sh runs each bench with --smoke (after ruff, before pytest), so a bench that
no longer runs fails the build. A smoke run goes through the same code as a measured
run at tiny sizes, on the Kafka broker and Milvus server of the tests
(SONICBUS_TEST_HOME, SONICBUS_TEST_KAFKA_PORT, SONICBUS_TEST_MILVUS_PORT; started if
they are not running, left running). Its figures say nothing about speed, and its JSON
line says so: "smoke": true.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

HOME = Path(os.environ.get("SONICBUS_TEST_HOME", "/tmp/sonicbus-test"))
KAFKA_PORT = int(os.environ.get("SONICBUS_TEST_KAFKA_PORT", "39092"))
MILVUS_PORT = int(os.environ.get("SONICBUS_TEST_MILVUS_PORT", "39530"))


def add_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="Tiny sizes on the test services: checks that the bench runs end to end, in "
        "seconds (infra/test.sh). The figures mean nothing.",
    )
