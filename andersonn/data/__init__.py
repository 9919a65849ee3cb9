"""Data stage: the three DFT datasets, fetched, verified, labelled, split and cached.

>>> from andersonn.data import TASKS, build_dataset, load_dataset, dataset_info
>>> ds = build_dataset("crystal-gap")           # fetch + verify archives, featurise, cache
>>> ds = load_dataset("crystal-gap")            # latest build; AndersonnError if none / stale
>>> ds.images, ds.labels, ds.splits, ds.ids, ds.classes, ds.meta
>>> ds.torch_split("train")                     # torch Dataset of (float32 image, int64 label)
>>> fetch_archives(["crystal-gap"], dest="dir")  # archives for an offline machine (--source)
>>> clean_datasets(dry_run=True)                # stale / incomplete builds that would go

Tasks: ``polarity`` (QM9 dipole), ``mof-pore`` (CoRE MOF 2019 LCD), ``crystal-gap``
(Materials Project PBE gap). See ``DATA.md`` for sources, licences and label rules.
"""

from __future__ import annotations

from andersonn.data.archives import fetch_archives
from andersonn.data.build import build_dataset, dataset_info, load_dataset
from andersonn.data.cache import CachedDataset, open_cache, write_cache
from andersonn.data.clean import clean_datasets
from andersonn.data.tasks import TASKS, TaskDefinition

__all__ = [
    "TASKS",
    "CachedDataset",
    "TaskDefinition",
    "build_dataset",
    "clean_datasets",
    "dataset_info",
    "fetch_archives",
    "load_dataset",
    "open_cache",
    "write_cache",
]
