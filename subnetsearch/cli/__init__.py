"""Command-line interface."""

from subnetsearch.cli._app import app, main

__all__ = ["app", "main"]
