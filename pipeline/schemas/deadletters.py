"""The `dlq` topic: anything that could not be processed, with the reason.

The original record travels inside, so `sonicbus dlq retry` can republish it
after a fix; values that are not UTF-8 are carried base64-encoded.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Literal

from pydantic import Field

from pipeline.schemas.base import Record, utc_now

Stage = Literal["decode", "validate", "ingest", "audio", "embed", "upsert", "query", "publish"]


class DeadLetter(Record):
    key: str | None = Field(None, description="Key of the original record (track or request id).")
    stage: Stage
    error_class: str
    message: str = Field(max_length=4000)
    attempts: int = Field(1, ge=1)
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    consumer_group: str | None = None
    value_text: str | None = Field(None, description="Original value, if it was UTF-8 text.")
    value_base64: str | None = Field(None, description="Original value otherwise.")
    value_truncated: bool = False
    headers: dict[str, str] = Field(default_factory=dict)
    failed_at: datetime = Field(default_factory=utc_now)

    def original_value(self) -> bytes | None:
        if self.value_text is not None:
            return self.value_text.encode()
        if self.value_base64 is not None:
            return base64.b64decode(self.value_base64)
        return None
