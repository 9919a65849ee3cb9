"""Command-line commands of the images stage: ``andersonn image`` and ``bench featurize``."""

from __future__ import annotations

import argparse
import sys

from andersonn.cli.options import output_dir, output_file, positive_int

_TASKS = ("polarity", "mof-pore", "crystal-gap")


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add this stage's sub-commands to the top-level and bench parsers."""
    p = commands.add_parser(
        "image", help="encode one structure as a node-neighbour image (PNG + NPY)",
        description="Read a structure (file or SMILES) and write OUT.png (one labelled panel per "
                    "channel) and OUT.npy (the float32 (C, H, W) array). The image spec is "
                    "the one `andersonn train LABELS_FILE` picks unless --task names one: "
                    "polarity for molecules, mof-pore for crystals holding C, H and a metal "
                    "(metal-organic frameworks), crystal-gap for other crystals.")
    p.add_argument("input", metavar="INPUT", help="structure file (xyz, sdf, mol, mol2, pdb, "
                   "cif, POSCAR, vasp, vasprun.xml, pwi, xsf, json; also .gz) or a SMILES string")
    p.add_argument("--out", required=True, metavar="FILE", type=output_file(),
                   help="output stem (FILE.png, FILE.npy)")
    p.add_argument("--format", dest="fmt", default=None, metavar="FMT",
                   help="override the format: smiles, xyz, sdf, mol, mol2, pdb, cif, poscar, "
                        "vasprun, espresso-in, xsf, pymatgen-dict")
    p.add_argument("--record", type=positive_int, default=None, metavar="K",
                   help="which structure (1-based) of a file that holds several (SDF records, "
                        "xyz frames, CIF blocks, ...)")
    p.add_argument("--task", default=None, choices=_TASKS,
                   help="image spec (default: polarity for molecules, mof-pore for crystals "
                   "with C, H and a metal, crystal-gap for other crystals)")
    p.set_defaults(func=_cmd_image)

    b = bench.add_parser("featurize", help="featurisation throughput on QM9 and CoRE MOF data",
                         description="Structures/second for QM9 molecules (xyz) and CoRE MOF "
                                     "CIFs, read from $ANDERSONN_CACHE/archives (default "
                                     "~/.cache/andersonn/archives; --archives DIR overrides); "
                                     "full-set times are extrapolated from the sample.")
    b.add_argument("--quick", action="store_true", help="small samples (about a minute)")
    b.add_argument("--out", default=None, metavar="DIR", type=output_dir,
                   help="write featurize.json/.md here")
    b.add_argument("--workers", type=positive_int, default=None,
                   help="processes (default: all cores)")
    b.add_argument("--archives", default=None, metavar="DIR", help="archive directory")
    b.set_defaults(func=_cmd_bench)


def _cmd_image(args: argparse.Namespace) -> int:
    from andersonn.data.labelled import image_for
    from andersonn.data.tasks import TASKS
    from andersonn.errors import InputError
    from andersonn.images.encode import encode_labelled
    from andersonn.images.render import write_image_files
    from andersonn.images.spec import DEFAULT_TASK, get_spec
    from andersonn.structures.readers import read_conformers, read_records

    records = read_records(args.input, fmt=args.fmt)
    k = 1 if args.record is None and len(records) == 1 else args.record
    if k is None or not 1 <= k <= len(records):
        held = f"it holds {len(records)} structure{'s' if len(records) > 1 else ''}"
        raise InputError(f"{args.input}: {held}; choose one with --record K" if k is None
                         else f"{args.input}: --record {k} out of range ({held})")
    record = records[k - 1]
    # a SMILES is checked against the molecule image's size before its (slow) embedding
    limit = (get_spec(args.task or DEFAULT_TASK["molecule"]).max_atoms
             if record.fmt == "smiles" else None)
    (s,) = read_conformers(record, 1, max_atoms=limit)
    for note in s.notes:  # how the reader had to interpret the input
        print(f"andersonn: warning: {s.name}: {note}", file=sys.stderr)
    spec = get_spec(args.task or image_for(s))  # as training on a labels file chooses
    if args.task and TASKS[args.task].kind != s.kind:
        print(f"andersonn: warning: {s.name}: a {s.kind} drawn with the {args.task} image, made "
              f"for {TASKS[args.task].kind}s (models of that task refuse {s.kind}s)",
              file=sys.stderr)
    img, labels = encode_labelled(s, spec)
    title = f"{s.name} ({s.formula}, {s.kind}) — {spec.name} image {'x'.join(map(str, img.shape))}"
    png, npy = write_image_files(args.out, img, spec, labels, title)
    print(f"wrote {png} and {npy} ({spec.name}, shape {tuple(img.shape)})")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from andersonn.bench.featurize import run_featurize_bench

    run_featurize_bench(quick=args.quick, out=args.out, workers=args.workers,
                        archives=args.archives)
    return 0
