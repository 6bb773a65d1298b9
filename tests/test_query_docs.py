"""The wire contract's examples are real: every JSON block in docs/wire-contract.md is a
valid request or reply, and every request type is shown."""

from __future__ import annotations

import json
import re
from pathlib import Path

from pipeline.recommender.engine import QUERY_TYPES
from pipeline.schemas.queries import QueryReply, query_request_adapter

DOC = Path(__file__).resolve().parent.parent / "docs" / "wire-contract.md"


def test_every_example_in_the_wire_contract_validates() -> None:
    blocks = re.findall(r"```json\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    shown = set()
    for block in blocks:
        value = json.loads(block)
        if "ok" in value:
            QueryReply.model_validate(value)
        else:
            shown.add(query_request_adapter.validate_python(value).type)
    assert shown == set(QUERY_TYPES)
