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
import json
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from pipeline.config import Settings
from pipeline.schemas.queries import QueryReply, ScoredTrack, query_request_adapter

console = Console()

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


def register(app: typer.Typer) -> None:
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

    schemas = next((g.typer_instance for g in app.registered_groups if g.name == "schemas"), app)

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


def _request_commands(app: typer.Typer, playlist: bool) -> None:
    """One command per request type; see `_finish` for what `playlist` changes."""

    def common(limit: int, model: list[str] | None, exclude: list[str] | None, cap: int | None):
        values: dict[str, Any] = {"request_id": uuid.uuid4().hex, "limit": limit}
        if model:
            values["models"] = model
        if exclude:
            values["exclude_track_ids"] = exclude
        if cap:
            values["max_per_artist"] = cap
        return values

    @app.command("recommend")
    def recommend(
        ctx: typer.Context,
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
        limit: Limit = 25,
        model: Models = None,
        exclude: Exclude = None,
        max_per_artist: PerArtist = None,
        timeout: Timeout = None,
        as_json: AsJson = False,
        to_navidrome: Playlist = None,
    ) -> None:
        """Tracks like the seeds (or a Navidrome seed mode's)."""
        request = common(limit, model, exclude, max_per_artist) | {
            "type": "recommend",
            "seeds": [_seed(s) for s in seed or []],
            "seed_mode": seed_mode,
            "merge": merge,
            "min_model_agreement": agreement,
            "diversity": diversity,
            "dislike_track_ids": dislike or [],
            "negative_prompts": negative or [],
        }
        if user:
            request["user_id"] = user
        _ask(ctx, request, timeout, as_json, to_navidrome, playlist)

    @app.command("text")
    def text(
        ctx: typer.Context,
        prompt: Annotated[str, typer.Argument(help='e.g. "calm piano instrumental".')],
        negative: Negative = None,
        limit: Limit = 25,
        model: Models = None,
        exclude: Exclude = None,
        max_per_artist: PerArtist = None,
        timeout: Timeout = None,
        as_json: AsJson = False,
        to_navidrome: Playlist = None,
    ) -> None:
        """Tracks matching a text prompt."""
        request = common(limit, model, exclude, max_per_artist) | {
            "type": "text",
            "prompt": prompt,
            "negative_prompts": negative or [],
        }
        _ask(ctx, request, timeout, as_json, to_navidrome, playlist)

    @app.command("similar")
    def similar(
        ctx: typer.Context,
        track_id: Annotated[str, typer.Argument(help="The seed track.")],
        walk: Annotated[bool, typer.Option("--walk", help="Radius-walk ordering.")] = False,
        limit: Limit = 25,
        model: Models = None,
        exclude: Exclude = None,
        max_per_artist: PerArtist = None,
        timeout: Timeout = None,
        as_json: AsJson = False,
        to_navidrome: Playlist = None,
    ) -> None:
        """Tracks like one track, ranked or as a smooth radius walk."""
        request = common(limit, model, exclude, max_per_artist) | {
            "type": "similar",
            "track_id": track_id,
            "ordering": "radius_walk" if walk else "ranked",
        }
        _ask(ctx, request, timeout, as_json, to_navidrome, playlist)

    @app.command("path")
    def path(
        ctx: typer.Context,
        start: Annotated[str, typer.Argument(help="First track.")],
        end: Annotated[str, typer.Argument(help="Last track.")],
        steps: Annotated[int, typer.Option(help="Tracks on the path, ends included.")] = 10,
        spherical: Annotated[bool, typer.Option(help="Spherical interpolation.")] = False,
        exact: Annotated[bool, typer.Option("--exact", help="Exactly STEPS tracks.")] = False,
        model: Models = None,
        exclude: Exclude = None,
        max_per_artist: PerArtist = None,
        timeout: Timeout = None,
        as_json: AsJson = False,
        to_navidrome: Playlist = None,
    ) -> None:
        """A path from one track to another."""
        request = common(max(steps, 2), model, exclude, max_per_artist) | {
            "type": "path",
            "start_track_id": start,
            "end_track_id": end,
            "steps": steps,
            "interpolation": "spherical" if spherical else "linear",
            "exact_length": exact,
        }
        _ask(ctx, request, timeout, as_json, to_navidrome, playlist)

    @app.command("alchemy")
    def alchemy(
        ctx: typer.Context,
        add: Annotated[list[str], typer.Option("--add", help="Track id to add (repeatable).")],
        subtract: Annotated[list[str] | None, typer.Option(help="Track id to subtract.")] = None,
        temperature: Annotated[float, typer.Option(help="0 = deterministic.")] = 1.0,
        threshold: Annotated[float, typer.Option(help="Subtract distance threshold.")] = 0.2,
        random_seed: Annotated[int | None, typer.Option(help="Repeatable sampling.")] = None,
        limit: Limit = 25,
        model: Models = None,
        exclude: Exclude = None,
        max_per_artist: PerArtist = None,
        timeout: Timeout = None,
        as_json: AsJson = False,
        to_navidrome: Playlist = None,
    ) -> None:
        """Like the added tracks, unlike the subtracted ones."""
        request = common(limit, model, exclude, max_per_artist) | {
            "type": "alchemy",
            "add_track_ids": add,
            "subtract_track_ids": subtract or [],
            "temperature": temperature,
            "subtract_threshold": threshold,
        }
        if random_seed is not None:
            request["random_seed"] = random_seed
        _ask(ctx, request, timeout, as_json, to_navidrome, playlist)

    @app.command("fingerprint")
    def fingerprint(
        ctx: typer.Context,
        user: Annotated[str | None, typer.Option(help="Navidrome user.")] = None,
        seed: Annotated[
            list[str] | None, typer.Option("--seed", "-s", help="TRACK_ID[:PLAYS] instead.")
        ] = None,
        half_life: Annotated[float, typer.Option(help="Recency half-life in days.")] = 30.0,
        limit: Limit = 25,
        model: Models = None,
        exclude: Exclude = None,
        max_per_artist: PerArtist = None,
        timeout: Timeout = None,
        as_json: AsJson = False,
        to_navidrome: Playlist = None,
    ) -> None:
        """Tracks matching a user's top plays, weighted by recency."""
        request = common(limit, model, exclude, max_per_artist) | {
            "type": "fingerprint",
            "seeds": [_seed(s) for s in seed or []],
            "half_life_days": half_life,
        }
        if user:
            request["user_id"] = user
        _ask(ctx, request, timeout, as_json, to_navidrome, playlist)

    @app.command("duplicates")
    def duplicates(
        ctx: typer.Context,
        threshold: Annotated[float, typer.Option(help="Cosine distance below = duplicate.")] = 0.02,
        limit: Limit = 100,
        model: Models = None,
        timeout: Timeout = None,
        as_json: AsJson = False,
        to_navidrome: Playlist = None,
    ) -> None:
        """Near-identical track pairs in the library."""
        request = common(limit, model, None, None) | {"type": "duplicates", "threshold": threshold}
        _ask(ctx, request, timeout, as_json, to_navidrome, playlist)

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


def _ask(
    ctx: typer.Context,
    values: dict[str, Any],
    timeout: float | None,
    as_json: bool,
    to_navidrome: str | None,
    playlist: bool,
) -> None:
    from pydantic import ValidationError

    from pipeline.client import QueryClient, QueryTimeout
    from pipeline.schemas.base import describe_validation_error

    settings: Settings = ctx.obj
    if playlist and not to_navidrome:
        raise typer.BadParameter("name the playlist", param_hint="--to-navidrome")
    try:
        request = query_request_adapter.validate_python(values)
    except ValidationError as exc:
        console.print(f"[red]error:[/red] {describe_validation_error(exc)}")
        raise typer.Exit(code=2) from None

    async def main() -> QueryReply:
        async with QueryClient(settings) as client:
            return await client.ask(request, timeout=timeout)

    try:
        reply = asyncio.run(main())
    except (QueryTimeout, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from None
    if as_json:
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
    from pipeline.producers.navidrome_db import NavidromeUnavailable
    from pipeline.recommender.playlists import navidrome_playlist

    try:
        playlist_id, created = asyncio.run(navidrome_playlist(settings.navidrome, name, track_ids))
    except NavidromeUnavailable as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1) from None
    verb = "created" if created else "replaced the songs of"
    console.print(f"{verb} Navidrome playlist {name!r} ({playlist_id}): {len(track_ids)} songs")
