"""Data stage: the three DFT datasets, fetched, verified, labelled, split and cached.

>>> from andersonn.data import TASKS, build_dataset, load_dataset, dataset_info
>>> ds = build_dataset("crystal-gap")           # fetch + verify archives, featurise, cache
>>> ds = load_dataset("crystal-gap")            # latest build; AndersonnError if none / stale
>>> ds.images, ds.labels, ds.splits, ds.ids, ds.classes, ds.meta
>>> ds.torch_split("train")                     # torch Dataset of (float32 image, int64 label)

Tasks: ``polarity`` (QM9 dipole), ``mof-pore`` (CoRE MOF 2019 LCD), ``crystal-gap``
(Materials Project PBE gap). See ``DATA.md`` for sources, licences and label rules.
"""

from __future__ import annotations

from andersonn.data.build import build_dataset, dataset_info, load_dataset
from andersonn.data.cache import CachedDataset, open_cache, write_cache
from andersonn.data.tasks import TASKS, TaskDefinition

__all__ = [
    "TASKS",
    "CachedDataset",
    "TaskDefinition",
    "build_dataset",
    "dataset_info",
    "load_dataset",
    "open_cache",
    "write_cache",
]
