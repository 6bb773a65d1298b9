"""The one exception hierarchy of sonicbus, and what each kind means at every edge.

Every error sonicbus raises on purpose derives from `SonicbusError` and is one
of four kinds. The kind fixes, in this one place, the reply error code a bus
client sees, the HTTP status of the HTTP service and the exit code of the
command line, so the three edges cannot drift apart:

| kind          | reply `error.code` | HTTP | exit |
|---------------|--------------------|------|------|
| Unavailable   | unavailable        | 503  | 1    |
| InvalidInput  | invalid_request    | 422  | 2    |
| NotFound      | not_found          | 404  | 1    |
| Conflict      | unavailable        | 409  | 1    |
| Timeout       | timeout            | 504  | 1    |

A subclass may narrow its HTTP status where the older API fixed another
(a refused replay command answers 400, see `pipeline.ops.replay`). Errors
that are not `SonicbusError`s are bugs: `internal`, 500, a traceback in the log.
"""

from __future__ import annotations

from typing import ClassVar, Literal

# The error codes of a QueryReply, as docs/wire-contract.md lists them.
ReplyCode = Literal[
    "invalid_request", "unknown_type", "not_found", "unavailable", "timeout", "internal"
]


# The HTTP status an edge answers with when the bus answered a request with an error
# reply: the kinds' statuses below, `unknown_type` as bad input, and `internal` (a bug in
# the query service, not in this edge) as a bad gateway.
REPLY_HTTP_STATUS: dict[str, int] = {
    "invalid_request": 422,
    "unknown_type": 422,
    "not_found": 404,
    "unavailable": 503,
    "timeout": 504,
    "internal": 502,
}


class SonicbusError(Exception):
    """The root: an error sonicbus raises on purpose, with a message a person can act on."""

    code: ClassVar[ReplyCode] = "internal"
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1


class Unavailable(SonicbusError):
    """Something outside this process (Kafka, Milvus, Navidrome, model weights) cannot serve
    now; the same call may work later."""

    code = "unavailable"
    http_status = 503


class InvalidInput(SonicbusError, ValueError):
    """The caller's input cannot be used as it is; repeating it will not help."""

    code = "invalid_request"
    http_status = 422
    exit_code = 2


class NotFound(SonicbusError, LookupError):
    """What the caller named does not exist (a track, a group, a model, a replay)."""

    code = "not_found"
    http_status = 404


class Conflict(SonicbusError):
    """The request clashes with what is running now (a replay, a group's live members)."""

    code = "unavailable"  # no request type conflicts today; the nearest reply code
    http_status = 409


class Timeout(SonicbusError, TimeoutError):
    """A deadline passed before the answer came."""

    code = "timeout"
    http_status = 504
