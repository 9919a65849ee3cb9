"""Command-line interface: a thin layer over the Python API.

Each stage owns one module here with a ``register(commands, bench)`` function that adds its
sub-commands; handlers import the heavy stage modules lazily so ``andersonn --help`` stays fast.
User errors (:class:`andersonn.errors.AndersonnError`) print one line and exit with status 2
(under ``torchrun`` rank 0 prints it, every rank exits with the status; warnings the user can
act on, :class:`~andersonn.errors.AndersonnWarning`, one line too); a
closed output pipe (``andersonn data info TASK | head``) ends the command quietly.
Before a command runs, :func:`andersonn.runtime.tune_cpu_allocator` keeps freed tensor memory
in the heap (faster CPU work; ``ANDERSONN_MALLOC_TUNING=0`` disables it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from andersonn import __version__
from andersonn.errors import AndersonnError, AndersonnWarning
from andersonn.runtime import tune_cpu_allocator

_STAGE_MODULES = ("engine", "images", "data", "train", "explain", "bench")


class _Parser(argparse.ArgumentParser):
    """An argument parser that takes ``-1e-3``, ``-2.5E4`` and ``-inf`` as values, as it takes
    ``-1`` and ``-0.5`` (Python < 3.13 reads them as unknown options, so ``--tol -1e-3`` got
    "expected one argument" instead of the option's own check). Sub-parsers inherit it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(
            r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:
        """As argparse's, but words no option takes are reported by the command they were
        given to (argparse reports them from the top-level parser)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self._command_parser(parsed).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def _command_parser(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The (sub-)parser of the command ``parsed`` ran, following its sub-commands."""
        parser: argparse.ArgumentParser = self
        while True:
            chosen = [action.choices.get(getattr(parsed, action.dest, None))
                      for action in parser._actions
                      if isinstance(action, argparse._SubParsersAction)]
            if not chosen or chosen[0] is None:
                return parser
            parser = chosen[0]

    def error(self, message: str) -> NoReturn:
        """A usage mistake as one line (argparse prints the whole usage first, and for an
        unknown option the top-level usage, not the command's), pointing at --help."""
        where = self.prog if self.prog != "andersonn" else "andersonn COMMAND"
        line = f"{self.prog}: error: {message} (`{where} --help` lists the options)\n"
        self.exit(2, line if _rank() == 0 else None)  # every rank parses: say it once


def build_parser() -> argparse.ArgumentParser:
    """Build the full ``andersonn`` argument parser."""
    import importlib

    parser = _Parser(
        prog="andersonn",
        description="Anderson-accelerated deep equilibrium classifiers for molecules and "
        "materials.",
    )
    parser.add_argument("--version", action="version", version=f"andersonn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    bench_parser = commands.add_parser(
        "bench", help="benchmarks (solvers, featurize, speedup, memory, spectrum, charges)"
    )
    bench = bench_parser.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    for name in _STAGE_MODULES:
        importlib.import_module(f"andersonn.cli.{name}").register(commands, bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``andersonn`` command; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_cpu_allocator()  # freed tensor memory stays in the heap; ANDERSONN_MALLOC_TUNING=0
    try:
        with _one_line_warnings():
            return int(args.func(args) or 0)
    except AndersonnError as exc:
        _say_once(f"andersonn: error: {exc}")
        return 2
    except KeyboardInterrupt:
        _say_once("andersonn: interrupted")
        return 130
    except BrokenPipeError:  # output piped into `head` & co.: stop quietly, like other tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush cannot fail
        return 141
    except OSError as exc:  # a path that cannot be written or read: read-only, disk full, ...
        if exc.filename is None and not isinstance(exc, _PATH_ERRORS):
            raise  # not about a file: a defect, shown with its traceback
        where = f"{exc.filename}: " if exc.filename else ""
        _say_once(f"andersonn: error: {where}{exc.strerror or exc}")
        return 2


def _rank() -> int:
    """This process's rank under ``torchrun`` (0 in a single process): the process group's
    while there is one, else ``RANK`` from the environment."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except (RuntimeError, ValueError):
        pass
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _say_once(line: str) -> None:
    """Print an outcome line on stderr, once for all ranks of a ``torchrun`` (rank 0's: every
    rank stops with the same message, :func:`andersonn.training.distributed.stop_together`);
    the exit status is every rank's."""
    if _rank() == 0:
        print(line, file=sys.stderr)


# errors about a path the user gave, one line even when they name no file
_PATH_ERRORS = (IsADirectoryError, NotADirectoryError, FileExistsError, PermissionError,
                FileNotFoundError)


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show user-facing warnings (:class:`AndersonnWarning`) as one line, without the source
    line that raised them; the format only, so recording them (``catch_warnings(record=True)``)
    still works."""
    previous = warnings.formatwarning

    def one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 line: str | None = None) -> str:
        if issubclass(category, AndersonnWarning):
            return f"andersonn: warning: {message}\n"
        return previous(message, category, filename, lineno, line)

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = previous


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
