"""The `finalmile` command line: one module per command group, the demo under `demo/`."""

from finalmile.cli.app import main

__all__ = ["main"]
