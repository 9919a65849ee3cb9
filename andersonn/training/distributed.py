"""Distributed helpers: one code path for one process or ``torchrun --nproc_per_node N``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``;
:func:`setup` initialises the process group from them (gloo on CPU, NCCL on CUDA) and is a no-op
when they are absent. Only rank 0 writes files, logs and progress bars.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import sys

import torch
import torch.distributed as dist

from andersonn.errors import ConfigError

__all__ = ["DistInfo", "all_reduce_max", "all_reduce_sum", "barrier", "broadcast_object",
           "cleanup", "collective_failure", "die_with_parent", "first_error", "is_lost_peer",
           "resolve_device", "setup", "stop_together"]


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world size, local rank, and whether it is the main one."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: torch.device) -> DistInfo:
    """Initialise the default process group if launched by torchrun (or already initialised)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", dist.get_rank())), False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return DistInfo()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    die_with_parent()  # before the rendezvous, which waits for peers that may never come
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(),
                    int(os.environ.get("LOCAL_RANK", "0")), True)


def cleanup(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


# PR_SET_PDEATHSIG of <linux/prctl.h>: the signal a process gets when its parent dies
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux's
    ``prctl(PR_SET_PDEATHSIG)``), so that the workers of a ``torchrun`` whose launcher was
    killed (``kill -9``) end with it instead of training on, orphaned. Returns whether it was
    set: a no-op (False) off Linux or where ``prctl`` cannot be called."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        done = int(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError, TypeError, ValueError):
        return False
    if done and os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)
    return done


# what a collective raises on the ranks that survive one that died (gloo: a RuntimeError
# naming the closed connection; NCCL and the rendezvous store: torch's DistError kinds)
_LOST_PEER_WORDS = ("connection closed by peer", "connection reset by peer", "broken pipe")


def is_lost_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective's failure across ranks under ``torchrun`` (a dead peer,
    a backend or rendezvous-store error; never in a single process): the command then ends
    with one line (:func:`collective_failure`) instead of the backend's traceback."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return False
    error_kind = getattr(dist, "DistError", None)
    if error_kind is not None and isinstance(exc, error_kind):
        return True
    return isinstance(exc, RuntimeError) and _names_lost_connection(exc)


def collective_failure(exc: BaseException) -> str:
    """What went wrong, in words, for a failure :func:`is_lost_peer` accepts: "another worker
    died" where the connection to a peer closed; otherwise the error's first line (a
    misconfigured backend or a timeout says so itself)."""
    if _names_lost_connection(exc):
        return "lost its peers: another worker died"
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"a collective failed ({type(exc).__name__}: {first})"


def _names_lost_connection(exc: BaseException) -> bool:
    return any(word in str(exc).lower() for word in _LOST_PEER_WORDS)


def _all_reduce(tensor: torch.Tensor, info: DistInfo, op: str) -> torch.Tensor:
    """Reduce ``tensor`` over ranks with ``op`` (``SUM``, ``MAX``: a ``ReduceOp``; in place;
    returns it). No-op on one process."""
    if info.distributed:
        reduce_op = getattr(dist.ReduceOp, op)
        if dist.get_backend() == "nccl" and not tensor.is_cuda:  # NCCL reduces GPU tensors only
            buf = tensor.cuda()
            dist.all_reduce(buf, op=reduce_op)
            tensor.copy_(buf.cpu())
        else:
            dist.all_reduce(tensor, op=reduce_op)
    return tensor


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum ``tensor`` over ranks (in place; returns it). No-op on one process."""
    return _all_reduce(tensor, info, "SUM")


def all_reduce_max(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The elementwise maximum of ``tensor`` over ranks (in place; returns it). No-op on one
    process."""
    return _all_reduce(tensor, info, "MAX")


def barrier(info: DistInfo) -> None:
    """Wait for every rank."""
    if info.distributed:
        dist.barrier()


def first_error(error: str | None, info: DistInfo) -> str | None:
    """Every rank's ``error`` (None where all went well) gathered: the first, by rank, or None.

    Called by every rank at the same point, so that a failure on one rank (a bad option found
    by rank 0, a build missing from one machine's cache) stops all of them with its message,
    instead of leaving the others blocked in (or torn out of) the next collective."""
    if not info.distributed:
        return error
    errors: list[str | None] = [None] * info.world_size
    dist.all_gather_object(errors, error)
    return next((e for e in errors if e), None)


def _message(exc: BaseException) -> str:
    """An exception in one line, as the command line prints it (an OSError names its file)."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def stop_together(exc: BaseException | None, info: DistInfo) -> None:
    """Raise, on every rank, the first (by rank) of the ranks' exceptions; return when none
    failed. ``exc``: this rank's (None where all went well).

    For work only rank 0 does (checks of the run directory, writing files): called by every
    rank at the same point, so that a failure there stops all of them with its one-line
    message (of its kind: ``ConfigError``, ``ResumeConflict``, ...) instead of leaving the
    others to crash in the next collective. One process: ``exc`` is raised as it is."""
    if not info.distributed:
        if exc is not None:
            raise exc
        return
    mine = None if exc is None else (type(exc).__name__, _message(exc))
    first = first_error(mine, info)  # type: ignore[arg-type]
    if first is None:
        return
    if exc is not None and mine == first:
        raise exc
    from andersonn import errors

    kind = getattr(errors, str(first[0]), None)
    if not (isinstance(kind, type) and issubclass(kind, errors.AndersonnError)):
        kind = errors.AndersonnError
    raise kind(first[1])


def broadcast_object(obj: object, info: DistInfo) -> object:
    """Broadcast a picklable object from rank 0 (internal values only, never file content)."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def resolve_device(name: str | torch.device, info: DistInfo | None = None, *,
                   what: str | None = None) -> torch.device:
    """``auto`` → CUDA (this rank's GPU) when available, else CPU; a device torch does not know,
    or CUDA where there is none, is a :class:`ConfigError` (one line, not a traceback) that
    names the device as ``what`` does (default ``--device NAME``; the Python API passes its
    parameter, ``Classifier(device='cuda')``)."""
    if isinstance(name, torch.device):
        name = str(name)
    local = info.local_rank if info else int(os.environ.get("LOCAL_RANK", "0"))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    shown = what or f"--device {name}"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):  # TypeError: not a string (None, a number)
        raise ConfigError(f"{shown}: unknown device (cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{shown}: no CUDA device is available here")
        if device.index is None:
            return torch.device("cuda", local % torch.cuda.device_count())
        if device.index >= torch.cuda.device_count():
            raise ConfigError(f"{shown}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device
