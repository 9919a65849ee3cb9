"""Per-epoch checkpoints that survive ``kill -9``.

Layout under the run directory::

    checkpoints/epoch-NNNN/model.safetensors   weights after epoch NNNN (safetensors)
    checkpoints/epoch-NNNN/best.safetensors    best-validation weights so far
    checkpoints/epoch-NNNN/optimizer.pt        optimizer + scheduler + RNG state (tensors, numbers)
    checkpoints/epoch-NNNN/state.json          epoch, best-val, history, cumulative wall time
    checkpoints/epoch-NNNN/warm_start.safetensors  per-sample fixed points (``--warm-start`` only)
    checkpoint.json                            pointer to the last *finished* epoch directory

Every file is written atomically and the pointer is replaced last, so a crash at any moment
leaves the previous pointer naming a complete directory. ``optimizer.pt`` is read with
``torch.load(weights_only=True)``: no arbitrary object is ever unpickled.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from andersonn.errors import AndersonnError
from andersonn.fileio import atomic_write_bytes, atomic_write_json

__all__ = ["POINTER", "checkpoint_epoch", "latest_checkpoint", "load_checkpoint", "load_weights",
           "read_pointer", "save_checkpoint", "save_weights"]

POINTER = "checkpoint.json"
WARM_FILE = "warm_start.safetensors"


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_weights(path: str | Path, state: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> None:
    """Write a state dict as safetensors, atomically."""
    atomic_write_bytes(path, st_save(_tensors(state), metadata=metadata))


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read safetensors weights (no code execution)."""
    try:
        return st_load(Path(path).read_bytes())
    except FileNotFoundError:
        raise AndersonnError(f"{path}: weights file not found") from None
    except Exception as exc:  # safetensors raises its own error types
        raise AndersonnError(f"{path}: not a valid safetensors file ({exc})") from None


def save_checkpoint(run_dir: str | Path, epoch: int, *, model_state: dict[str, torch.Tensor],
                    best_state: dict[str, torch.Tensor], optimizer: dict[str, Any],
                    scheduler: dict[str, Any], state: dict[str, Any],
                    warm_states: torch.Tensor | None = None) -> Path:
    """Write the checkpoint of a finished ``epoch`` and point ``checkpoint.json`` at it
    (``warm_states``: the warm-start table, so a resumed run continues warm)."""
    run_dir = Path(run_dir)
    folder = run_dir / "checkpoints" / f"epoch-{epoch:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(folder / "model.safetensors", model_state)
    save_weights(folder / "best.safetensors", best_state)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer, "scheduler": scheduler,
                "torch_rng": torch.get_rng_state()}, buffer)
    atomic_write_bytes(folder / "optimizer.pt", buffer.getvalue())
    if warm_states is not None:  # serialised as is: the table can be large, no clone first
        atomic_write_bytes(folder / WARM_FILE, st_save({"states": warm_states.contiguous()}))
    atomic_write_json(folder / "state.json", {**state, "epoch": epoch})
    atomic_write_json(run_dir / POINTER, {"epoch": epoch,
                                          "path": f"checkpoints/epoch-{epoch:04d}"})
    for old in (run_dir / "checkpoints").glob("epoch-*"):
        if old.name != folder.name:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def read_pointer(run_dir: str | Path) -> dict[str, Any] | None:
    """``checkpoint.json`` of ``run_dir``: ``{"epoch": int, "path": str}`` (None: no pointer);
    :class:`AndersonnError` when it cannot be read or lacks either."""
    pointer = Path(run_dir) / POINTER
    if not pointer.is_file():
        return None
    try:
        record = json.loads(pointer.read_text())
        return {"epoch": int(record["epoch"]), "path": str(record["path"])}
    except (OSError, ValueError, KeyError, TypeError):
        raise AndersonnError(f"{pointer}: damaged checkpoint pointer") from None


def checkpoint_epoch(run_dir: str | Path) -> int | None:
    """The last finished epoch checkpointed in ``run_dir`` (None: no readable pointer)."""
    try:
        record = read_pointer(run_dir)
    except AndersonnError:
        return None
    return None if record is None else record["epoch"]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The directory of the last finished epoch, or None when there is none."""
    record = read_pointer(run_dir)
    if record is None:
        return None
    pointer, folder = Path(run_dir) / POINTER, Path(run_dir) / record["path"]
    if not (folder / "state.json").is_file():
        raise AndersonnError(f"{pointer} names {folder}, which is incomplete")
    return folder


def load_checkpoint(folder: str | Path) -> dict[str, Any]:
    """Read a checkpoint directory: ``model``, ``best`` (state dicts), ``optimizer``,
    ``scheduler``, ``torch_rng``, ``state`` (JSON), ``warm_states`` (tensor or None)."""
    folder = Path(folder)
    extra = torch.load(io.BytesIO((folder / "optimizer.pt").read_bytes()), weights_only=True)
    warm = folder / WARM_FILE
    return {"warm_states": load_weights(warm)["states"] if warm.is_file() else None,
            "model": load_weights(folder / "model.safetensors"),
            "best": load_weights(folder / "best.safetensors"),
            "optimizer": extra["optimizer"], "scheduler": extra["scheduler"],
            "torch_rng": extra["torch_rng"],
            "state": json.loads((folder / "state.json").read_text())}
