"""The `sonicbus` command: `main` builds the application, one module per command group.

- `main`: the application, global options, `up`, `infra`, `topics`, `config`, `schemas`;
- `producers`: `watch`, `scan navidrome`;
- `embed`: `embed` (one model's consumer group);
- `query`: `query` (the service), `ask ...`, `playlist ...`, `schemas asyncapi`;
- `ops`: `lag`, `status`, `serve`, `dlq ...`;
- `reembed`: `reembed` (replay, progress, cancel, resume);
- `common`: what every command shares (the console, `fail`, durations, times).
"""

from pipeline.cli.main import app, main

__all__ = ["app", "main"]
