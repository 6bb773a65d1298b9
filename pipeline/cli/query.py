"""CLI of the query service: `sonicbus query`, `sonicbus ask ...`, `sonicbus playlist ...`,
`sonicbus schemas asyncapi`.

`ask` and `playlist` share one command per request type; `ask` prints the
reply (a table, or `--json`), `playlist` also writes the tracks as a
Navidrome playlist through the Subsonic API (`createPlaylist`), replacing
the songs of a playlist of that name if the user already has one, so users
of a vanilla Navidrome get every playlist mode too.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pipeline.cli.common import console, fail
from pipeline.config import Settings
from pipeline.schemas.queries import QueryReply, ScoredTrack, query_request_adapter

Limit = Annotated[
    int, typer.Option("--limit", "-n", help="Results wanted (capped by the service).")
]
Models = Annotated[
    list[str] | None, typer.Option("--model", "-m", help="Model(s) to search (repeatable).")
]
Exclude = Annotated[list[str] | None, typer.Option("--exclude", help="Track ids to leave out.")]
PerArtist = Annotated[int | None, typer.Option("--max-per-artist", help="Artist cap.")]
Timeout = Annotated[float | None, typer.Option("--timeout", help="Seconds to wait for the reply.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the reply as JSON.")]
Playlist = Annotated[
    str | None, typer.Option("--to-navidrome", help="Write the result as this Navidrome playlist.")
]
Negative = Annotated[
    list[str] | None, typer.Option("--negative", help="Negative prompt (repeatable).")
]


def register(app: typer.Typer, schemas: typer.Typer) -> None:
    ask_app = typer.Typer(help="Ask the query service (over Kafka) and print the reply.")
    playlist_app = typer.Typer(help="Ask the query service and write the result to Navidrome.")
    _request_commands(ask_app, playlist=False)
    _request_commands(playlist_app, playlist=True)
    app.add_typer(ask_app, name="ask")
    app.add_typer(playlist_app, name="playlist")

    @app.command("query")
    def query_command(ctx: typer.Context) -> None:
        """Run the query service (consumer group `query`); start more to scale out."""
        from pipeline.consumers.query import run_query_service
        from pipeline.supervisor import Supervisor

        settings: Settings = ctx.obj

        async def main() -> None:
            supervisor = Supervisor({"query": lambda stop: run_query_service(settings, stop)})
            supervisor.install_signal_handlers()
            await supervisor.run()

        asyncio.run(main())

    @schemas.command("asyncapi")
    def asyncapi_command(
        ctx: typer.Context,
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
        ] = None,
    ) -> None:
        """The AsyncAPI 3.0 document of the query service, generated from its FastStream app."""
        text = json.dumps(asyncapi_document(ctx.obj), indent=2) + "\n"
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text)
            console.print(str(output))


def asyncapi_document(settings: Settings) -> dict[str, Any]:
    from faststream.specification import AsyncAPI

    from pipeline.consumers.query import build_broker

    broker = build_broker(settings, service=None)
    spec = AsyncAPI(
        broker,
        title="sonicbus query service",
        version="1.0",
        description="Recommendation request/reply over Kafka (see docs/wire-contract.md).",
    )
    return json.loads(spec.to_specification().to_json())


@dataclass
class Shared:
    """The options every request command takes, spelled one way (see `request_command`)."""

    limit: int = 25
    model: list[str] | None = None
    exclude: list[str] | None = None
    max_per_artist: int | None = None
    timeout: float | None = None
    as_json: bool = False
    to_navidrome: str | None = None

    def request_fields(self) -> dict[str, Any]:
        values: dict[str, Any] = {"request_id": uuid.uuid4().hex, "limit": self.limit}
        if self.model:
            values["models"] = self.model
        if self.exclude:
            values["exclude_track_ids"] = self.exclude
        if self.max_per_artist:
            values["max_per_artist"] = self.max_per_artist
        return values


SHARED_OPTIONS = {
    "limit": Limit,
    "model": Models,
    "exclude": Exclude,
    "max_per_artist": PerArtist,
    "timeout": Timeout,
    "as_json": AsJson,
    "to_navidrome": Playlist,
}


def request_command(
    app: typer.Typer,
    name: str,
    playlist: bool,
    *,
    limit: int = 25,
    without: tuple[str, ...] = (),
) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    """Register `build` as command `name`, with the shared options added to its own.

    `build` takes the command's own options and returns the request fields
    they make; the shared options (`Shared`) are appended to its signature
    here, so typer shows and parses them alike in every command, and the
    request is sent (and, for `playlist`, written to Navidrome) in one place.
    """

    def register(build: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        defaults = Shared(limit=limit)
        shared = [
            inspect.Parameter(
                option,
                inspect.Parameter.KEYWORD_ONLY,
                default=getattr(defaults, option),
                annotation=annotation,
            )
            for option, annotation in SHARED_OPTIONS.items()
            if option not in without
        ]
        context = inspect.Parameter(
            "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context
        )
        own = list(inspect.signature(build, eval_str=True).parameters.values())

        def command(ctx: typer.Context, **values: Any) -> None:
            options = Shared(**{p.name: values.pop(p.name) for p in shared})
            request = options.request_fields() | build(**values)
            _ask(ctx, request, options, playlist)

        command.__signature__ = inspect.Signature([context, *own, *shared])  # type: ignore[attr-defined]
        command.__doc__ = build.__doc__
        command.__name__ = build.__name__
        app.command(name)(command)
        return build

    return register


def _request_commands(app: typer.Typer, playlist: bool) -> None:
    """One command per request type; see `_ask` for what `playlist` changes."""

    @request_command(app, "recommend", playlist)
    def recommend(
        seed: Annotated[
            list[str] | None, typer.Option("--seed", "-s", help="TRACK_ID or TRACK_ID:WEIGHT.")
        ] = None,
        seed_mode: Annotated[
            str, typer.Option(help="explicit, recent, favorites, all or discovery.")
        ] = "explicit",
        user: Annotated[str | None, typer.Option(help="Navidrome user (seed modes).")] = None,
        merge: Annotated[str, typer.Option(help="union, intersection or priority.")] = "union",
        agreement: Annotated[int, typer.Option(help="Found by at least K models.")] = 1,
        diversity: Annotated[float, typer.Option(help="MMR: 0 = pure similarity.")] = 0.0,
        dislike: Annotated[list[str] | None, typer.Option(help="Disliked track id.")] = None,
        negative: Negative = None,
    ) -> dict[str, Any]:
        """Tracks like the seeds (or a Navidrome seed mode's)."""
        request = {
            "type": "recommend",
            "seeds": [_seed(s) for s in seed or []],
            "seed_mode": seed_mode,
            "merge": merge,
            "min_model_agreement": agreement,
            "diversity": diversity,
            "dislike_track_ids": dislike or [],
            "negative_prompts": negative or [],
        }
        return request | ({"user_id": user} if user else {})

    @request_command(app, "text", playlist)
    def text(
        prompt: Annotated[str, typer.Argument(help='e.g. "calm piano instrumental".')],
        negative: Negative = None,
    ) -> dict[str, Any]:
        """Tracks matching a text prompt."""
        return {"type": "text", "prompt": prompt, "negative_prompts": negative or []}

    @request_command(app, "similar", playlist)
    def similar(
        track_id: Annotated[str, typer.Argument(help="The seed track.")],
        walk: Annotated[bool, typer.Option("--walk", help="Radius-walk ordering.")] = False,
    ) -> dict[str, Any]:
        """Tracks like one track, ranked or as a smooth radius walk."""
        ordering = "radius_walk" if walk else "ranked"
        return {"type": "similar", "track_id": track_id, "ordering": ordering}

    @request_command(app, "path", playlist, without=("limit",))
    def path(
        start: Annotated[str, typer.Argument(help="First track.")],
        end: Annotated[str, typer.Argument(help="Last track.")],
        steps: Annotated[int, typer.Option(help="Tracks on the path, ends included.")] = 10,
        spherical: Annotated[bool, typer.Option(help="Spherical interpolation.")] = False,
        exact: Annotated[bool, typer.Option("--exact", help="Exactly STEPS tracks.")] = False,
    ) -> dict[str, Any]:
        """A path from one track to another."""
        return {
            "type": "path",
            "limit": max(steps, 2),
            "start_track_id": start,
            "end_track_id": end,
            "steps": steps,
            "interpolation": "spherical" if spherical else "linear",
            "exact_length": exact,
        }

    @request_command(app, "alchemy", playlist)
    def alchemy(
        add: Annotated[list[str], typer.Option("--add", help="Track id to add (repeatable).")],
        subtract: Annotated[list[str] | None, typer.Option(help="Track id to subtract.")] = None,
        temperature: Annotated[float, typer.Option(help="0 = deterministic.")] = 1.0,
        threshold: Annotated[float, typer.Option(help="Subtract distance threshold.")] = 0.2,
        random_seed: Annotated[int | None, typer.Option(help="Repeatable sampling.")] = None,
    ) -> dict[str, Any]:
        """Like the added tracks, unlike the subtracted ones."""
        request = {
            "type": "alchemy",
            "add_track_ids": add,
            "subtract_track_ids": subtract or [],
            "temperature": temperature,
            "subtract_threshold": threshold,
        }
        return request | ({"random_seed": random_seed} if random_seed is not None else {})

    @request_command(app, "fingerprint", playlist)
    def fingerprint(
        user: Annotated[str | None, typer.Option(help="Navidrome user.")] = None,
        seed: Annotated[
            list[str] | None, typer.Option("--seed", "-s", help="TRACK_ID[:PLAYS] instead.")
        ] = None,
        half_life: Annotated[float, typer.Option(help="Recency half-life in days.")] = 30.0,
    ) -> dict[str, Any]:
        """Tracks matching a user's top plays, weighted by recency."""
        request = {
            "type": "fingerprint",
            "seeds": [_seed(s) for s in seed or []],
            "half_life_days": half_life,
        }
        return request | ({"user_id": user} if user else {})

    @request_command(app, "duplicates", playlist, limit=100, without=("exclude", "max_per_artist"))
    def duplicates(
        threshold: Annotated[float, typer.Option(help="Cosine distance below = duplicate.")] = 0.02,
    ) -> dict[str, Any]:
        """Near-identical track pairs in the library."""
        return {"type": "duplicates", "threshold": threshold}

    if not playlist:

        @app.command("raw")
        def raw(
            ctx: typer.Context,
            file: Annotated[Path, typer.Argument(help="JSON request file ('-' = stdin).")],
            timeout: Timeout = None,
        ) -> None:
            """Send a JSON request as it is and print the reply as JSON (any client's view)."""
            from pipeline.client import QueryClient

            settings: Settings = ctx.obj
            if str(file) != "-" and not file.is_file():
                raise typer.BadParameter(f"no such file: {file}", param_hint="FILE")
            body = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()

            async def main() -> QueryReply:
                async with QueryClient(settings) as client:
                    return await client.ask_raw(body, timeout=timeout or 10.0)

            print(asyncio.run(main()).model_dump_json(indent=2))


def _seed(text: str) -> dict[str, Any]:
    track_id, _, weight = text.rpartition(":") if ":" in text else (text, "", "")
    try:
        return {"track_id": track_id, "weight": float(weight)} if weight else {"track_id": text}
    except ValueError:
        return {"track_id": text}


def _ask(ctx: typer.Context, values: dict[str, Any], options: Shared, playlist: bool) -> None:
    """Send the request, print the reply; for `playlist`, write its tracks to Navidrome."""
    from aiokafka.errors import KafkaError
    from pydantic import ValidationError

    from pipeline.client import QueryClient, QueryTimeout
    from pipeline.schemas.base import describe_validation_error

    settings: Settings = ctx.obj
    timeout, to_navidrome = options.timeout, options.to_navidrome
    if playlist and not to_navidrome:
        raise typer.BadParameter("name the playlist", param_hint="--to-navidrome")
    try:
        request = query_request_adapter.validate_python(values)
    except ValidationError as exc:
        raise fail(describe_validation_error(exc), code=2) from None

    async def main() -> QueryReply:
        async with QueryClient(settings) as client:
            return await client.ask(request, timeout=timeout)

    try:
        reply = asyncio.run(main())
    except (QueryTimeout, ValueError) as exc:
        raise fail(str(exc)) from None
    except KafkaError as exc:
        servers = settings.kafka.bootstrap_servers
        raise fail(f"cannot reach Kafka at {servers}: {exc}") from None
    if options.as_json:
        print(reply.model_dump_json(indent=2, exclude_none=True))
    else:
        print_reply(reply)
    if not reply.ok:
        raise typer.Exit(code=1)
    if to_navidrome:
        write_playlist(settings, to_navidrome, [t.track_id for t in reply.tracks])


def print_reply(reply: QueryReply) -> None:
    for warning in reply.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    if reply.error is not None:
        console.print(f"[red]{reply.error.code}:[/red] {reply.error.message}")
        return
    console.print(_table(f"{reply.type} ({reply.elapsed_ms:.1f} ms)", reply.tracks))
    for name, tracks in reply.extra.items():
        console.print(_table(name, tracks))
    if reply.pairs:
        pairs = Table(title="duplicate pairs")
        for column in ("distance", "first", "second"):
            pairs.add_column(column)
        for pair in reply.pairs:
            pairs.add_row(f"{pair.distance:.4f}", _label(pair.first), _label(pair.second))
        console.print(pairs)


def _label(track: ScoredTrack) -> str:
    return f"{track.artist or '?'} - {track.title or '?'} ({track.track_id})"


def _table(title: str, tracks: list[ScoredTrack]) -> Table:
    table = Table(title=title)
    for column in ("#", "score", "artist", "title", "album", "track_id", "found by"):
        table.add_column(column, justify="right" if column in ("#", "score") else "left")
    for rank, t in enumerate(tracks, 1):
        table.add_row(
            str(rank),
            f"{t.score:.4f}",
            t.artist or "",
            t.title or "",
            t.album or "",
            t.track_id,
            ",".join(t.found_by),
        )
    return table


def write_playlist(settings: Settings, name: str, track_ids: list[str]) -> None:
    """Create (or refill) the user's Navidrome playlist `name` with these tracks."""
    from pipeline.navidrome.database import NavidromeUnavailable
    from pipeline.navidrome.playlists import navidrome_playlist

    try:
        playlist_id, created = asyncio.run(navidrome_playlist(settings.navidrome, name, track_ids))
    except NavidromeUnavailable as exc:
        raise fail(str(exc)) from None
    verb = "created" if created else "replaced the songs of"
    console.print(f"{verb} Navidrome playlist {name!r} ({playlist_id}): {len(track_ids)} songs")
