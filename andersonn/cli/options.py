"""Argument types shared by the sub-commands: output paths checked when the command line is
parsed, so a path that cannot be written fails in one line before any work, not after it."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["finite_float", "non_negative_int", "output_dir", "output_file", "positive_float",
           "positive_int"]


def _writable_parent(path: Path) -> str | None:
    """Why nothing can be created at ``path`` (its nearest existing ancestor is a file or not
    writable), or None when it can."""
    for ancestor in path.absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                return f"{ancestor} is a file, not a folder"
            if not os.access(ancestor, os.W_OK | os.X_OK):
                return f"no permission to write in {ancestor}"
            return None
    return None


def output_file(*suffixes: str) -> Callable[[str], str]:
    """An argparse type for a file to be written: not a folder, in a place that can be
    written, ending in one of ``suffixes`` (any when none are given)."""

    def check(value: str) -> str:
        if not value.strip():
            raise argparse.ArgumentTypeError("an empty path")
        path = Path(value)
        if suffixes and path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{value}: must end in {', '.join(suffixes)}")
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{value} is a folder; give a file name")
        problem = _writable_parent(path)
        if problem is not None:
            raise argparse.ArgumentTypeError(f"cannot write {value}: {problem}")
        return value

    return check


def output_dir(value: str) -> str:
    """An argparse type for a folder to be written into (created when missing)."""
    if not value.strip():
        raise argparse.ArgumentTypeError("an empty path")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value} is a file; give a folder")
    problem = _writable_parent(path / "x")
    if problem is not None:
        raise argparse.ArgumentTypeError(f"cannot write into {value}: {problem}")
    return value


def _whole_number(text: str, least: int) -> int:
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if number < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {number}")
    return number


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (counts, sizes, threads, workers)."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0 (seeds)."""
    return _whole_number(text, 0)


def finite_float(text: str) -> float:
    """An argparse type: a finite number (label thresholds; not inf or nan)."""
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return number


def positive_float(text: str) -> float:
    """An argparse type: a finite number greater than 0 (tolerances, time limits)."""
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(number) or number <= 0:
        why = "a finite number" if math.isinf(number) else "a positive number"
        if number == 0 and text.strip() not in {"0", "0.0", "-0", "+0", "0."}:
            why = "a positive number (it rounds to 0)"
        raise argparse.ArgumentTypeError(f"must be {why}, got {text}")
    return number
