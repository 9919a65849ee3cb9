"""Your own labelled structures as a dataset: what ``andersonn train mine.csv`` learns from.

A labels file is a CSV (``.tsv``: tab-separated) with a header row, or an SDF (also
``.sdf.gz``) whose records carry the label as a data field. It gives an input column (``input``,
``smiles``, ``structure``, ``path`` or ``file``: a SMILES or a structure file; a relative path
is taken from the labels file's folder) and either a class column (``class`` or ``label``: any
class names) or a property value (``value``, or ``dipole``, ``lcd``, ``gap``, ...), which
ascending ``bins`` turn into classes: value < bins[0] is the first class, bins[0] <= value <
bins[1] the second, and so on. Columns of other names can be named instead
(``input_column``, ``label_column``; ``andersonn train --input-column/--label-column``).

:func:`build_labelled_dataset` reads every input as ``predict`` reads it, encodes it with one
of the graph-image presets (chosen from the structures when not given: molecules get the
``polarity`` image, crystals the ``crystal-gap`` one), skips and reports rows that cannot be
used, splits the rest 80/10/10 stratified by class (seeded), and caches the result like the
built-in tasks (:mod:`andersonn.data.cache`, under ``<cache>/datasets/custom``), keyed by the
labels file, the files it names, the image and the label rule.
:func:`labelled_dataset` does the same for inputs and labels already in memory
(``Classifier.fit``).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import itertools
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from andersonn.data.build import CACHE_FORMAT, cached_build, datasets_root
from andersonn.data.cache import (
    CachedDataset,
    ensure_writable,
    file_sha256,
    open_cache,
    write_cache,
)
from andersonn.data.splits import DEFAULT_FRACTIONS, SPLIT_NAMES, split_indices, stratified_split
from andersonn.errors import ConfigError, InputError
from andersonn.fileio import decode_text, is_wide_unicode

__all__ = [
    "CLASS_COLUMNS",
    "CUSTOM_TASK",
    "INPUT_COLUMNS",
    "VALUE_COLUMNS",
    "LabelTable",
    "LabelledDataset",
    "LabelledRows",
    "bin_class_names",
    "build_labelled_dataset",
    "choose_image",
    "class_key",
    "describe_skipped",
    "label_rows",
    "labelled_dataset",
    "parse_value",
    "read_label_table",
]

CUSTOM_TASK = "custom"
"""The task name of a run trained on a labels file."""

INPUT_COLUMNS = ("input", "smiles", "structure", "path", "file")
CLASS_COLUMNS = ("class", "label")
VALUE_COLUMNS = ("value", "dipole", "dipole_debye", "lcd", "gap", "band_gap", "gap_ev")
"""Column names accepted (case-insensitive) in a labels file, per role."""

MIN_PER_CLASS = 10  # fewer and a class cannot be in train, val and test at once
MAX_NUMBERED_CLASSES = 20  # more distinct numbers in a class column are taken to be values


@dataclass
class LabelTable:
    """The usable rows of a labels file: where each is (for reports), its input (a SMILES or
    path string, or the SDF record) and its raw label text; ``kind`` says whether that text is
    a class name (``"class"``) or a property value (``"value"``), named by ``column``."""

    path: Path
    rows: list[tuple[str, Any, str]]
    kind: str
    column: str
    skipped: list[dict[str, Any]] = field(default_factory=list)


def read_label_table(path: str | os.PathLike[str],
                     value_columns: Sequence[str] = VALUE_COLUMNS, *,
                     input_column: str | None = None, label_column: str | None = None,
                     values: bool = False) -> LabelTable:
    """Read a labels file (CSV, TSV or SDF) into a :class:`LabelTable`; rows without an input
    or label are skipped and reported, a file that cannot be used at all is an
    :class:`InputError`.

    ``input_column`` / ``label_column`` name the columns (case-insensitive) instead of the
    recognised names, which are then ignored. A named label column holds class names, unless
    ``values`` (the caller bins values into classes) and most labels in it are numbers: it then
    holds values, and a row whose label is not a number is skipped with its reason
    (:func:`label_rows`), as in a value column of a recognised name."""
    from andersonn.structures.readers import format_from_path, is_file

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such labels file")
    sdf = format_from_path(path) == "sdf"
    names, rows = _sdf_table(path) if sdf else _csv_table(path)
    if not rows:  # before the columns are looked for: a file without rows has none to name
        if path.stat().st_size == 0:
            raise InputError(f"{path}: the file is empty")
        raise InputError(f"{path}: no records" if sdf else
                         f"{path}: no rows below its header row ({', '.join(names)})")
    header = {name.strip().lower(): name for name in names}

    def named(name: str, option: str) -> str:
        if name.strip().lower() not in header:
            raise InputError(f"{path}: no {'field' if sdf else 'column'} {name!r} "
                             f"({option}); it has {', '.join(names) or 'none'}")
        return header[name.strip().lower()]

    def column(options: Sequence[str], role: str) -> str | None:
        found = [header[o] for o in options if o in header]
        if len(found) > 1 and not (sdf and role == "input"):  # an SDF's input is the record
            raise InputError(f"{path}: {len(found)} {role} {'fields' if sdf else 'columns'} "
                             f"({', '.join(found)}); keep one of them (rename or remove the "
                             "others)")
        return found[0] if found else None

    input_col = (named(input_column, "input column") if input_column
                 else column(INPUT_COLUMNS, "input"))
    if label_column:
        label = named(label_column, "label column")
        given = [raw for _, f, _ in rows if (raw := (f.get(label) or "").strip())]
        numbers = sum(parse_value(raw) is not None for raw in given)
        class_col, value_col = (None, label) if values and 2 * numbers > len(given) \
            else (label, None)
    else:
        class_col, value_col = column(CLASS_COLUMNS, "class"), column(value_columns, "value")
    if input_col is None and not sdf:
        raise InputError(f"{path}: no input column (call it one of {', '.join(INPUT_COLUMNS)}, "
                         "or name it with --input-column)")
    if (class_col is None) == (value_col is None):
        which = "both a class and a value" if class_col else "no class or value"
        raise InputError(f"{path}: {which} {'field' if sdf else 'column'}; give exactly one of "
                         f"{', '.join((*CLASS_COLUMNS, *value_columns))}, or name one with "
                         "--label-column")
    label_col = class_col or value_col
    assert label_col is not None
    table = LabelTable(path, [], "class" if class_col else "value", label_col)
    for where, fields, record in rows:
        item = record if record is not None else (fields.get(input_col) or "").strip()
        raw = (fields.get(label_col) or "").strip()
        if not item or not raw:
            table.skipped.append({"where": where, "reason": "empty input or label"})
            continue
        if record is None:
            local = path.parent / item
            item = str(local) if is_file(local) else item
        table.rows.append((where, item, raw))
    if not table.rows:
        raise InputError(f"{path}: no usable rows ({describe_skipped(table.skipped)})")
    return table


_Table = tuple[list[str], list[tuple[str, dict[str, str], Any]]]
"""Column names, and per row: where it is (for reports), its fields, the record it describes
(``None`` for a CSV row, whose input is a column)."""


def _csv_table(path: Path) -> _Table:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc})") from None
    if b"\x00" in data[:65536] and not is_wide_unicode(data):
        raise InputError(f"{path}: binary data, not a CSV / TSV text file")
    lines = decode_text(data).splitlines()  # UTF-16 by its mark, UTF-8, else Latin-1
    reader = csv.DictReader(lines, delimiter=_delimiter(path, lines[0] if lines else ""))
    names = [name or "" for name in reader.fieldnames or []]
    rows = [(f"{path.name} line {number}", row, None)  # the header is line 1
            for number, row in enumerate(reader, start=2)]
    return names, rows


def _delimiter(path: Path, header: str) -> str:
    """Tab for ``.tsv``; otherwise a comma, unless the header has none but has semicolons (a
    spreadsheet saved with a decimal-comma locale) or tabs."""
    if path.suffix.lower() == ".tsv":
        return "\t"
    if "," not in header:
        for other in (";", "\t"):
            if other in header:
                return other
    return ","


def _sdf_table(path: Path) -> _Table:
    from andersonn.structures.readers import read_records, sdf_fields

    rows = [(record.name, sdf_fields(record.text), record) for record in read_records(path)]
    names = list(dict.fromkeys(name for _, fields, _ in rows for name in fields))
    return names, rows


def parse_value(raw: str) -> float | None:
    """The finite number in ``raw`` (a decimal comma, ``2,5``, is read as ``2.5``), or None."""
    try:
        value = float(raw)
    except ValueError:
        if raw.count(",") != 1 or "." in raw:
            return None
        try:
            value = float(raw.replace(",", "."))
        except ValueError:
            return None
    return value if math.isfinite(value) else None


def bin_class_names(bins: Sequence[float]) -> list[str]:
    """Default class names of ``bins``: ``< 2.5``, ``>= 2.5``; or ``< 1``, ``1–3``, ``>= 3``."""
    edges = [f"{b:g}" for b in bins]
    middle = [f"{lo}–{hi}" for lo, hi in itertools.pairwise(edges)]
    return [f"< {edges[0]}", *middle, f">= {edges[-1]}"]


def _check_bins(bins: Sequence[float] | None) -> list[float] | None:
    if bins is None:
        return None
    values = [float(b) for b in bins]
    if not values or any(not math.isfinite(b) for b in values) or any(
            b >= c for b, c in itertools.pairwise(values)):
        raise ConfigError(f"bins must be one or more finite, strictly ascending numbers, "
                          f"got {list(bins)}")
    return values


class LabelledRows(tuple[list[Any], list[int], list[str], str, list[dict[str, Any]]]):
    """What :func:`label_rows` gives: the tuple ``(inputs, labels, classes, rule, skipped)``,
    and ``kept``: for each input, the index of its row in the table's ``rows``."""

    kept: list[int]

    def __new__(cls, inputs: list[Any], labels: list[int], classes: list[str], rule: str,
                skipped: list[dict[str, Any]], kept: list[int]) -> LabelledRows:
        self = super().__new__(cls, (inputs, labels, classes, rule, skipped))
        self.kept = kept
        return self

    def __getnewargs__(self) -> tuple[Any, ...]:  # copy and pickle: __new__ takes six
        return (*self, self.kept)


def label_rows(table: LabelTable, classes: Sequence[str] | None = None,
               bins: Sequence[float] | None = None, *,
               to_class: Callable[[float], int] | None = None) -> LabelledRows:
    """Class indices of a table's rows: (inputs, labels, class names, the label rule in words,
    rows skipped), with ``kept`` (:class:`LabelledRows`): the row of each input. A class
    column takes its names as given (``classes`` fixes their order; default: sorted,
    numerically when all are numbers); names that differ only in case or in how a number is
    written (``Polar``, ``polar``; ``1``, ``1.0``) are one class, named as first spelt
    (:func:`class_key`). A value column needs ``bins``, or ``to_class`` (a task's own rule,
    with ``classes`` its names; a class column's digits are then also taken as class
    indices)."""
    bins = _check_bins(bins)
    classes = None if classes is None else [str(c) for c in classes]  # any sequence, arrays too
    skipped = list(table.skipped)
    source = f"{table.path.name} column {table.column!r}"
    if to_class is not None:
        names, rule = [str(c) for c in classes or ()], f"the task's rule on {source}"
    elif table.kind == "class":
        if bins is not None:
            word = next((f": {where} has {raw!r}" for where, _, raw in table.rows
                         if parse_value(raw) is None), "")
            raise ConfigError(f"{table.path}: bins turn a value column into classes, but its "
                              f"labels are class names ({table.column!r}{word})")
        names = [str(c) for c in classes] if classes else _sorted_names(
            set(_class_names([raw for _, _, raw in table.rows])))
        if not classes and len(names) < 2:
            raise InputError(f"{table.path}: column {table.column!r} names only one class "
                             f"({', '.join(repr(n) for n in names)}); a classifier needs two or "
                             "more")
        if not classes and len(names) > MAX_NUMBERED_CLASSES and all(
                parse_value(n) is not None for n in names):
            raise ConfigError(f"{table.path}: column {table.column!r} holds {len(names)} "
                              "different numbers: values, not class names? Give bins that turn "
                              "them into classes (e.g. --bins 2.5)")
        rule = f"the class named in {source}"
    else:
        if bins is None:
            raise ConfigError(f"{table.path}: its labels are values ({table.column!r}); give "
                              "bins that turn them into classes (e.g. --bins 2.5)")
        names = [str(c) for c in classes] if classes else bin_class_names(bins)
        if len(names) != len(bins) + 1:
            raise ConfigError(f"{len(bins)} bin edge(s) make {len(bins) + 1} classes, but "
                              f"{len(names)} class names were given")
        rule = (f"{source} binned at {', '.join(f'{b:g}' for b in bins)}: "
                f"class k if bins[k-1] <= value < bins[k] ({' | '.join(names)})")
        to_class = functools.partial(_bin_index, bins)
    if len({class_key(n) for n in names}) != len(names) or len(names) < 2:
        raise ConfigError(f"classes must be two or more distinct names (case and number "
                          f"spelling aside: a = A, 1 = 1.0), got {names}")
    lookup = {class_key(n): i for i, n in enumerate(names)}
    inputs: list[Any] = []
    labels: list[int] = []
    kept: list[int] = []
    unknown: dict[str, str] = {}  # class key -> the first spelling
    for row, (where, item, raw) in enumerate(table.rows):
        if table.kind == "class":
            label = lookup.get(class_key(raw))
            if label is None and to_class is not None and raw.isdigit() and \
                    int(raw) < len(names):
                label = int(raw)  # a task's class index
            if label is None:
                unknown.setdefault(class_key(raw), raw)
                skipped.append({"where": where,
                                "reason": f"class {raw!r} is not one of {', '.join(names)}"})
                continue
        else:
            value = parse_value(raw)
            if value is None:
                skipped.append({"where": where, "reason": f"value {raw!r} is not a number"})
                continue
            assert to_class is not None
            label = to_class(value)
        inputs.append(item)
        labels.append(label)
        kept.append(row)
    if not inputs:
        if unknown:
            first = ", ".join(repr(u) for u in list(unknown.values())[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise InputError(f"{table.path}: no usable rows ({len(skipped)} skipped): its "
                             f"labels {first}{more} are not among the classes "
                             f"{', '.join(names)}")
        raise InputError(f"{table.path}: no usable rows ({describe_skipped(skipped)})")
    return LabelledRows(inputs, labels, names, rule, skipped, kept)


def class_key(name: str) -> str:
    """What identifies a class name: its case-folded text, or for a number its value
    (``Polar`` = ``polar``, ``1`` = ``1.0``)."""
    value = parse_value(name.strip())
    if value is None:
        return name.strip().casefold()
    return str(int(value)) if value.is_integer() else repr(value)


def _class_names(raws: Sequence[str]) -> list[str]:
    """The distinct class names of a class column, each as first spelt in the file."""
    first: dict[str, str] = {}
    for raw in raws:
        first.setdefault(class_key(raw), raw)
    return list(first.values())


def _bin_index(bins: Sequence[float], value: float) -> int:
    return int(np.searchsorted(bins, value, side="right"))


def _sorted_names(names: set[str]) -> list[str]:
    values = {n: parse_value(n) for n in names}
    if all(v is not None for v in values.values()):
        return sorted(names, key=lambda n: (values[n], n))
    return sorted(names, key=lambda n: n.lower())


@dataclass
class LabelledDataset:
    """A dataset in memory with the attributes training reads (as :class:`CachedDataset`)."""

    images: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    ids: list[str]
    classes: list[str]
    meta: dict[str, Any]
    report: dict[str, Any]

    def __len__(self) -> int:
        return len(self.labels)

    def split_indices(self, name: str) -> np.ndarray:
        """Indices of the entries in split ``name`` (train, val or test)."""
        return split_indices(self.splits, name)


def _input_name(item: Any) -> str:
    return str(getattr(item, "name", item))


def looks_like_framework(structure: Any) -> bool:
    """A crystal with carbon, hydrogen and a metal: a metal-organic framework or coordination
    polymer. Of the 6,317 Materials Project crystals behind ``crystal-gap`` 13 qualify (all
    metal-organic salts); of the first 2,000 CoRE MOF 2019-ASR frameworks 1,933 do (the rest
    lack hydrogen, e.g. metal cyanides)."""
    from andersonn.structures.elements import IS_METAL

    numbers = {int(z) for z in structure.numbers}
    return bool(structure.periodic and {1, 6} <= numbers and any(IS_METAL[z] for z in numbers))


def image_for(structure: Any) -> str:
    """The image a labels-file run gives ``structure``: mof-pore for a framework
    (:func:`looks_like_framework`), else its kind's default task."""
    from andersonn.images import DEFAULT_TASK

    return "mof-pore" if looks_like_framework(structure) else DEFAULT_TASK[structure.kind]


def choose_image(inputs: Sequence[Any], image: str | None) -> str:
    """The image preset for ``inputs``: ``image`` when given, else by the first readable
    input: molecule → ``polarity``, a metal-organic crystal (:func:`looks_like_framework`) →
    ``mof-pore``, any other crystal → ``crystal-gap``."""
    from andersonn.images import DEFAULT_TASK, IMAGE_SPECS
    from andersonn.structures import read_structure
    from andersonn.structures.readers import format_from_path, is_file

    if image is not None:
        if image not in IMAGE_SPECS:
            raise ConfigError(f"unknown image {image!r}; choose one of {', '.join(IMAGE_SPECS)}")
        return image
    reasons = []
    for item in inputs[:20]:
        if isinstance(item, str) and not is_file(item) and format_from_path(item) is None \
                and os.sep not in item:
            return DEFAULT_TASK["molecule"]  # a SMILES: no need to embed it to know
        try:
            structure = read_structure(item)
        except Exception as exc:  # reported below if none is readable
            reasons.append(f"{_input_name(item)}: {str(exc).splitlines()[0][:120]}")
            continue
        return image_for(structure)
    raise InputError(f"cannot tell molecules from crystals: none of the first {len(reasons)} "
                     f"inputs could be read ({reasons[0] if reasons else 'none given'}); "
                     "give the image (--image)")


def labelled_dataset(inputs: Sequence[Any], labels: Sequence[int], classes: Sequence[str], *,
                     image: str | None = None, seed: int = 0, workers: int | None = None,
                     progress: bool = True, rule: str = "", skipped: Sequence[dict] = (),
                     meta: dict[str, Any] | None = None,
                     split: Callable[[np.ndarray], np.ndarray] | None = None
                     ) -> LabelledDataset:
    """Encode labelled inputs (SMILES, structure files, records) as graph images and split them
    80/10/10 stratified by class with ``seed`` (or by ``split``: class labels -> split codes,
    which the training domain then follows); unreadable inputs, those of the other kind (a
    crystal among molecules) and repeats of an image already seen (the same input twice) are
    skipped and reported. Refuses data too small to split."""
    from andersonn.data.domain import Domain
    from andersonn.images import IMAGE_SPECS, featurize_many
    from andersonn.images.batch import SOURCE

    started = time.time()
    if len(inputs) != len(labels):
        raise InputError(f"{len(inputs)} inputs but {len(labels)} labels")
    classes = [str(c) for c in classes]
    image = choose_image(inputs, image)
    spec = IMAGE_SPECS[image]
    kind = "crystal" if image != "polarity" else "molecule"
    res = featurize_many([(item, SOURCE, _input_name(item)) for item in inputs], spec,
                         workers=workers, progress=progress, desc=f"featurize ({image} image)")
    report = [dict(s) for s in skipped]
    report += [{"where": str(name), "reason": str(reason).removeprefix(f"{name}: ")[:300]}
               for _, name, reason in res.failures]
    keep = []
    first_of: dict[bytes, int] = {}  # image bytes digest -> input index of its first input
    for row, (index, summary) in enumerate(zip(res.ok_indices, res.summaries, strict=True)):
        if bool(summary[2]) != (kind == "crystal"):
            other = "crystal" if summary[2] else "molecule"
            report.append({"where": _input_name(inputs[index]),
                           "reason": f"a {other}, but the {image} image is for {kind}s"})
            continue
        # the same image twice (the same SMILES or file in two rows) could land in train and
        # test alike and flatter the test score: the first one is kept
        digest = hashlib.blake2b(res.images[row].tobytes(), digest_size=16).digest()
        first = first_of.setdefault(digest, index)
        if first != index:
            other_label = " with another label" if labels[first] != labels[index] else ""
            report.append({"where": _input_name(inputs[index]),
                           "reason": f"the same image as {_input_name(inputs[first])}"
                                     f"{other_label}; the first is kept"})
            continue
        keep.append(row)
    ok = [res.ok_indices[r] for r in keep]
    y = np.asarray([labels[i] for i in ok], dtype=np.int64)
    counts = np.bincount(y, minlength=len(classes))
    small = [f"{c} ({n})" for c, n in zip(classes, counts.tolist(), strict=True)
             if n < MIN_PER_CLASS]
    if small:  # split: a caller's own (Classifier.fit: train and val, no test)
        use = "train and test on" if split is None else "train and validate on"
        raise InputError(f"too few usable structures to {use}: class {', '.join(small)}; "
                         f"each class needs at least {MIN_PER_CLASS} "
                         f"({describe_skipped(report, limit=1)})")
    splits = stratified_split(y, seed=seed) if split is None else np.asarray(split(y))
    fractions = (list(DEFAULT_FRACTIONS) if split is None else
                 [float(np.mean(splits == code)) for code in range(len(SPLIT_NAMES))])
    train_rows = np.flatnonzero(splits == 0)
    summaries = [res.summaries[r] for r in keep]
    domain = Domain.from_summaries(summaries[j] for j in train_rows)
    split_counts = {name: np.bincount(y[splits == code], minlength=len(classes)).tolist()
                    for code, name in enumerate(SPLIT_NAMES)}
    info = {
        "task": CUSTOM_TASK,
        "label_rule": rule,
        "image": image,
        "image_spec": spec.to_dict(),
        "featurizer_version": spec.featurizer_version,
        "seed": seed,
        "split_fractions": fractions,
        "class_counts": counts.tolist(),
        "split_class_counts": split_counts,
        "domain": domain.to_dict(),
        "skipped_count": len(report),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(time.time() - started, 1),
        **(meta or {}),
    }
    images = np.asarray(res.images, dtype=np.float32)[keep]
    return LabelledDataset(images, y, splits, [_input_name(inputs[i]) for i in ok], classes,
                           info, {"task": CUSTOM_TASK, "skipped": report})


def _cache_key(table: LabelTable, digest: str, fields: dict[str, Any]) -> str:
    """Changes with the labels file (``digest``: its sha256), any file it names (path, size,
    modification time), the image and label settings."""
    named = []
    for _, item, _ in table.rows:
        if isinstance(item, str) and len(item) < 4096 and os.path.isfile(item):
            stat = os.stat(item)
            named.append([os.path.abspath(item), stat.st_size, stat.st_mtime_ns])
    blob = json.dumps({"labels_sha256": digest, "files": named, **fields},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_labelled_dataset(path: str | os.PathLike[str], *, image: str | None = None,
                           classes: Sequence[str] | None = None,
                           bins: Sequence[float] | None = None, seed: int = 0,
                           workers: int | None = None, progress: bool = True,
                           cache_dir: str | os.PathLike[str] | None = None,
                           force: bool = False, key: str | None = None,
                           input_column: str | None = None,
                           label_column: str | None = None) -> CachedDataset:
    """Build (or reuse, when an identical complete build exists) the dataset of a labels file;
    see the module docstring. ``input_column`` / ``label_column``: the columns to read
    (:func:`read_label_table`; a named label column holds values when ``bins`` are given).
    ``key``: the build a run was trained on (its
    ``dataset.cache_key``): opened while cached, even when the labels file has changed since
    or is gone; otherwise rebuilt only if the file still gives that build, else refused."""
    from andersonn.images import IMAGE_SPECS

    own = None if key is None or force else cached_build(CUSTOM_TASK, key, cache_dir)
    if own is not None:
        return own
    expected = key
    table = read_label_table(path, input_column=input_column, label_column=label_column,
                             values=bins is not None)
    inputs, labels, names, rule, skipped = label_rows(table, classes, bins)
    fields = {"image": image, "classes": names, "bins": _check_bins(bins), "seed": seed,
              "fractions": list(DEFAULT_FRACTIONS), "format": CACHE_FORMAT,
              "specs": {n: [spec.featurizer_version, spec.to_dict()]  # any preset may be chosen
                        for n, spec in IMAGE_SPECS.items()}}
    if input_column or label_column:  # absent otherwise: the keys of earlier builds stay valid
        fields["columns"] = [input_column, label_column]
    digest = file_sha256(table.path)
    key = _cache_key(table, digest, fields)
    if expected is not None and key != expected:
        raise InputError(f"{path}: the labels file (or a file it names, or the featuriser) "
                         f"changed since the run was trained, and the run's build {expected} "
                         "is no longer cached; train a new run on it")
    built = None if force else cached_build(CUSTOM_TASK, key, cache_dir)
    if built is not None:
        return built
    directory = ensure_writable(datasets_root(cache_dir) / CUSTOM_TASK,
                                chosen=cache_dir is not None) / key
    ds = labelled_dataset(inputs, labels, names, image=image, seed=seed, workers=workers,
                          progress=progress, rule=rule, skipped=skipped, meta={
                              "key": key, "cache_key": key,
                              "labels_file": os.path.abspath(table.path),
                              "thresholds": fields["bins"],
                              "sources": {"labels": {"file": os.path.abspath(table.path),
                                                     "sha256": digest}},
                              "rows": len(table.rows) + len(table.skipped)})
    write_cache(directory, images=ds.images, labels=ds.labels, ids=ds.ids, splits=ds.splits,
                classes=ds.classes, meta=ds.meta, report=ds.report)
    return open_cache(directory)


def describe_skipped(skipped: Sequence[dict[str, Any]], limit: int = 3) -> str:
    """One line about skipped rows: how many, and the first ``limit`` with their reasons."""
    if not skipped:
        return "no rows skipped"
    first = re.sub(r"\s+", " ", "; ".join(f"{s['where']}: {s['reason']}"
                                           for s in skipped[:limit]))
    more = f"; and {len(skipped) - limit} more" if len(skipped) > limit else ""
    return f"{len(skipped)} row(s) skipped ({first}{more})"
