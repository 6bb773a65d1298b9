"""`python -m pipeline.cli` is the `sonicbus` command."""

from pipeline.cli.main import main

main()
