"""Torch view of one split of a cached dataset (imported lazily: torch is heavy)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["SplitDataset"]


class SplitDataset(Dataset):
    """Items ``(float32 image tensor (C, H, W), int64 label tensor)`` of one split.

    Images stay memory-mapped; pickling (DataLoader workers under ``spawn``) sends the file
    name, not the data, and each worker re-opens the map, so all workers share the page cache.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> None:
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = int(self.indices[item])
        image = torch.from_numpy(np.array(self.images[i], dtype=np.float32, copy=True))
        return image, torch.tensor(self.labels[i], dtype=torch.int64)

    @property
    def targets(self) -> np.ndarray:
        """Labels of this split, in item order."""
        return self.labels[self.indices]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        filename = getattr(self.images, "filename", None)
        if filename is not None:
            state["images"] = None
            state["_images_file"] = str(filename)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        filename = state.pop("_images_file", None)
        self.__dict__.update(state)
        if filename is not None:
            self.images = np.load(filename, mmap_mode="r", allow_pickle=False)
