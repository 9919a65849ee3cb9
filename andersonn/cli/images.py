"""Command-line commands of the images stage (placeholder until the stage lands)."""

from __future__ import annotations

import argparse


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add this stage's sub-commands to the top-level and bench parsers."""
