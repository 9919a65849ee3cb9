"""Prediction: a scikit-learn-like classifier over trained runs (``fit``, ``predict``,
``predict_proba``), and what it reads and writes.

``Classifier.load(run_dir)`` reads a finished run (safetensors weights + ``config.json``) and
refuses one whose featuriser version differs from the installed one, because its images would
mean something else. Every structure is checked against the run's applicability domain
(:mod:`andersonn.data.domain`): a molecule given to a crystal model (or the reverse) fails,
elements no training structure held and molecule sizes outside the training range come back as
warnings (``Prediction.warnings``; :class:`DomainWarning` from ``predict``/``predict_proba``).
Inputs are images ``(N, C, H, W)`` or structures: SMILES strings, structure
files (xyz, sdf, mol, mol2, pdb, cif, POSCAR, vasprun.xml, ...; gzip read through; a file of
several structures gives one input per structure), :class:`andersonn.structures.Structure`
objects, or text files listing such inputs one per line, or directories (their structure
files). ``Scientist`` is another name for ``Classifier``.

Modules: :mod:`~andersonn.predict.classifier` (the estimator),
:mod:`~andersonn.predict.inputs` (expanding inputs, naming them in messages),
:mod:`~andersonn.predict.featurize` (reading and encoding inputs, in chunks and processes),
:mod:`~andersonn.predict.inference` (the model over images, conformers merged),
:mod:`~andersonn.predict.run_files` (what a run's config gives prediction),
:mod:`~andersonn.predict.checks` and :mod:`~andersonn.predict.labels` (what fit / predict /
score are given), :mod:`~andersonn.predict.warn` (the warnings),
:mod:`~andersonn.predict.output` (:class:`Prediction`, tables, JSON / CSV / SD files) and
:mod:`~andersonn.predict.sdf` (the SD file).
"""

from __future__ import annotations

from andersonn.predict.checks import _check_new_run_dir as _check_new_run_dir
from andersonn.predict.classifier import Classifier, Scientist
from andersonn.predict.featurize import READABLE, read_in_domain
from andersonn.predict.featurize import _progress as _progress
from andersonn.predict.inference import merge_conformers
from andersonn.predict.inputs import LIST_SUFFIXES, UnusableInput, expand_inputs, without_name
from andersonn.predict.output import Prediction, format_table, write_predictions
from andersonn.predict.warn import ConvergenceWarning, DomainWarning, ReadCaveatWarning

PREDICT_CHUNK = 4096
"""Inputs :meth:`Classifier.predict_inputs`, :meth:`~Classifier.predict_proba`,
:func:`andersonn.evaluate.evaluate_labelled` and ensembles read, encode and infer at a time
(about 16 KB per polarity image: 64 MB of images per chunk, per conformer): the memory knob,
read at each call, so setting ``andersonn.predict.PREDICT_CHUNK`` takes effect."""

__all__ = ["LIST_SUFFIXES", "PREDICT_CHUNK", "READABLE", "Classifier", "ConvergenceWarning",
           "DomainWarning", "Prediction", "ReadCaveatWarning", "Scientist", "UnusableInput",
           "expand_inputs", "format_table", "merge_conformers", "read_in_domain",
           "without_name", "write_predictions"]
