"""What every record on the bus shares: a schema version, JSON on the wire.

Readers tolerate unknown fields (a newer producer may add some) but reject
records whose ``schema_version`` has a major part they do not know, so an
incompatible change is caught at the boundary and dead-lettered with a clear
reason instead of half-working downstream.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import InvalidInput


class SchemaError(InvalidInput):
    """A record could not be decoded into its schema; the message says why."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class Record(BaseModel):
    """Base of every value published on a sonicbus topic."""

    model_config = ConfigDict(extra="ignore", frozen=False, populate_by_name=True)

    SCHEMA_MAJOR: ClassVar[int] = 1
    schema_version: str = Field("1.0", description="major.minor; readers accept their own major.")

    @field_validator("schema_version")
    @classmethod
    def _known_major(cls, value: str) -> str:
        major = value.split(".", 1)[0]
        if not major.isdigit() or int(major) != cls.SCHEMA_MAJOR:
            raise ValueError(
                f"unsupported schema_version {value!r}: this reader handles {cls.SCHEMA_MAJOR}.x"
            )
        return value

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes | str | None) -> Self:
        """Decode and validate; every failure becomes a `SchemaError` with a short reason."""
        if raw is None:
            raise SchemaError(
                f"{cls.__name__}: empty value (tombstone) where a record was expected"
            )
        try:
            return cls.model_validate_json(raw)
        except ValidationError as exc:
            raise SchemaError(f"{cls.__name__}: {describe_validation_error(exc)}") from exc


def describe_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """A one-line summary of a pydantic error that fits in a log line or a reply."""
    parts = []
    for error in exc.errors()[:limit]:
        where = ".".join(str(p) for p in error["loc"]) or "<root>"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)
