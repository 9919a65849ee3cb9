"""Shared helpers of the headline benchmarks (``bench speedup``, ``bench memory``).

A benchmark writes into one results folder (``results/<bench>-<task>`` unless ``--out`` says
otherwise): ``<bench>.json`` (every number, plus the machine it ran on), ``<bench>.md`` (the
markdown tables that are also printed) and PNG plots. Every file is written atomically
(:mod:`andersonn.fileio`), so an interrupted run never leaves a half-written result.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import platform
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from andersonn.errors import ConfigError
from andersonn.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from andersonn.runtime import cpu_allocator_tuned

__all__ = [
    "CUDA_GRAPH_NEEDS_CUDA",
    "allocation_failures",
    "allocation_message",
    "available_memory",
    "check_memory",
    "check_positive",
    "check_threads",
    "fmt",
    "human_bytes",
    "machine_info",
    "markdown_table",
    "new_figure",
    "ratio",
    "results_dir",
    "save_figure",
    "set_threads",
    "write_results",
]


CUDA_GRAPH_NEEDS_CUDA = ("--cuda-graph needs --device cuda (CUDA graphs do not apply on the "
                         "CPU)")


def results_dir(bench: str, task: str | None = None, out: str | os.PathLike[str] | None = None
                ) -> Path:
    """The results folder: ``out`` when given, else ``results/<bench>[-<task>]``; created and
    checked to be writable. Call it before the work, so a bad path fails in one line at once
    (:class:`ConfigError`) instead of after a long run."""
    path = Path(out) if out is not None else Path("results") / (f"{bench}-{task}" if task
                                                                else bench)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"cannot write results into {path}: a file is in the way") from None
    except PermissionError:
        raise ConfigError(f"cannot write results into {path}: permission denied") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write results into {path}: permission denied")
    return path


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (``None``: 1) and return the number in use.

    One thread is the default: on a shared, oversubscribed CPU, OpenMP threads spin-wait on
    each other and a step can be ~10× slower with 2 threads than with 1, which would swamp the
    solver differences being measured. A count below 1 is a :class:`ConfigError`, not
    silently 1.
    """
    n = 1 if threads is None else check_threads(threads)
    torch.set_num_threads(n)
    return n


def check_threads(threads: int | None) -> int | None:
    """``threads`` as an int, or None; :class:`ConfigError` (one line) when it is below 1."""
    return check_positive("--threads", threads)


def check_positive(name: str, value: int | None) -> int | None:
    """``value`` as an int, or None; :class:`ConfigError` naming ``name`` when it is below 1."""
    if value is None:
        return None
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1 (got {value})")
    return int(value)


def available_memory(device: str = "cpu") -> int | None:
    """Bytes a benchmark can still allocate: free memory of the current CUDA device, or the
    kernel's ``MemAvailable`` (Linux; else physical memory); None where it cannot be read."""
    if device.startswith("cuda"):
        try:
            return int(torch.cuda.mem_get_info()[0]) if torch.cuda.is_available() else None
        except RuntimeError:
            return None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def human_bytes(n: float) -> str:
    """``n`` bytes as kB / MB / GB / TB / PB (powers of 1000), 3 significant digits."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:.3g} PB"


def check_memory(estimate: float, what: str, advice: str, device: str = "cpu",
                 available: int | None = None) -> None:
    """Refuse (:class:`ConfigError`, one line) a benchmark whose estimated peak memory
    ``estimate`` (bytes) exceeds what the device has free (``available``, default
    :func:`available_memory`); ``what`` names the options behind the estimate, ``advice`` says
    which to lower. Nothing is checked where the free memory cannot be read."""
    free = available_memory(device) if available is None else available
    if free is None or estimate <= free:
        return
    kind = "GPU memory" if device.startswith("cuda") else "memory"
    raise ConfigError(f"{what} needs about {human_bytes(estimate)} of {kind}, more than the "
                      f"{human_bytes(free)} available; {advice}")


_ALLOCATION_FAILURE = re.compile(r"can't allocate memory|out of memory|std::bad_alloc",
                                 re.IGNORECASE)
_TRIED = re.compile(r"tried to allocate (\d+(?:\.\d+)?) ?(bytes|[KMGTP]i?B)", re.IGNORECASE)


def allocation_message(error: BaseException | str) -> str | None:
    """What a failed allocation asked for (``"an allocation of 246 TB"``) when ``error`` (an
    exception or a worker's last stderr line) is one, else None."""
    text = str(error)
    if not (isinstance(error, MemoryError) or _ALLOCATION_FAILURE.search(text)):
        return None
    tried = _TRIED.search(text)
    if tried is None:
        return "an allocation"
    amount, unit = float(tried.group(1)), tried.group(2).lower()
    scale = {"bytes": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12, "pb": 1e15, "kib": 1024,
             "mib": 1024.0 ** 2, "gib": 1024.0 ** 3, "tib": 1024.0 ** 4, "pib": 1024.0 ** 5}
    return f"an allocation of {human_bytes(amount * scale.get(unit, 1))}"


@contextlib.contextmanager
def allocation_failures(what: str, advice: str) -> Iterator[None]:
    """Turn a failed allocation inside the block (the CPU allocator's RuntimeError, CUDA's
    OutOfMemoryError, MemoryError) into a one-line :class:`ConfigError` naming the options
    ``what`` and ``advice``; any other error passes through."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        failed = allocation_message(exc)
        if failed is None:
            raise
        raise ConfigError(f"{what} ran out of memory ({failed} failed); {advice}") from None


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """Where a benchmark ran: platform, CPU count, torch version and threads, GPU name."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "cpu_allocator_tuned": cpu_allocator_tuned(),
    }
    with contextlib.suppress(OSError):  # not on every platform
        info["load_average"] = list(os.getloadavg())
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["tf32"] = {"cudnn": torch.backends.cudnn.allow_tf32,
                        "matmul": torch.backends.cuda.matmul.allow_tf32}
    return info


@contextlib.contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """Allow (or forbid) TF32 in CUDA convolutions and matrix products; restored afterwards.

    TF32 rounds the operands of f to a 10-bit mantissa, so f is piecewise constant at a relative
    scale of ~5e-4 in z. Near a fixed point with spectral radius ρ that floors the attainable
    residual at about that noise / (1 − ρ); extrapolating solvers, which difference successive
    residuals, stall there first (measured on an H200: on the weak conv cell every Anderson-type
    solver stopped between 5e-4 and 8e-4, forward iteration crept on to 1e-4).
    """
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den``, or ``None`` when either is missing or ``den`` is not positive."""
    if num is None or den is None or not den > 0 or not math.isfinite(num):
        return None
    return float(num) / float(den)


def fmt(value: Any, digits: int = 3, suffix: str = "") -> str:
    """Compact human formatting for tables: ``None`` → ``–``, floats to ``digits`` significant."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value}{suffix}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return f"{value}"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.{max(1, digits - 1)}e}{suffix}"
        return f"{value:.{digits}g}{suffix}"
    return f"{value}{suffix}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells that are not strings go through :func:`fmt`."""
    def cell(v: Any) -> str:
        return (v if isinstance(v, str) else fmt(v)).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(out_dir: Path, name: str, data: dict[str, Any], markdown: str) -> None:
    """Write ``<name>.json`` and ``<name>.md`` into ``out_dir`` atomically."""
    atomic_write_json(out_dir / f"{name}.json", data)
    atomic_write_text(out_dir / f"{name}.md", markdown)


def new_figure(width: float = 6.4, height: float = 4.2) -> tuple[Any, Any]:
    """A matplotlib (figure, axes) pair on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    return fig, ax


def save_figure(fig: Any, path: Path) -> Path:
    """Render ``fig`` to PNG and write it atomically to ``path``."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return path
