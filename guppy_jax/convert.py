"""Move GuppyLM weights between files (safetensors, the original's PyTorch pickles) and guppy-jax runs.

    python -m guppy_jax.convert import model.safetensors --run-dir runs/original   # config.json beside it
    python -m guppy_jax.convert import best_model.pt --run-dir runs/original
    python -m guppy_jax.convert import pytorch_model.bin --run-dir runs/original   # config.json beside it
    python -m guppy_jax.convert import best_model.pt --run-dir runs/original --trust-pickle  # runs its code
    python -m guppy_jax.convert export --run-dir runs/guppy --out exported/        # model.safetensors
    python -m guppy_jax.convert export --run-dir runs/guppy --out exported/ --format bin
    python -m guppy_jax.convert export --run-dir runs/guppy --out exported/ --format onnx  # + int8

`import` takes model.safetensors, a bare state dict (pytorch_model.bin) or a best_model.pt-style
dict ({"model_state_dict", "config", ...}); bare weights need a config.json beside them (flat,
in GuppyLM's own keys or the hub names, or the original's nested training config). The
tokenizer comes from --tokenizer or from a tokenizer.json beside the weights (the original keeps
its tokenizer at data/tokenizer.json in its repository). Half-precision weights (bfloat16,
float16) are upcast to float32, with a note. Pickles are read weights-only: one that holds
Python objects is refused, and nothing in it runs, unless you pass --trust-pickle for a file
you trust (it is then unpickled in full, which runs any code it names). `export` writes
model.safetensors (or pytorch_model.bin with --format bin) under the original's state-dict keys,
lm_head.weight included as its own copy of the tied embedding, with config.json and
tokenizer.json; both load strictly into reference_torch. Pickles need the `torch` extra.
--format onnx writes guppy.onnx and guppy.int8.onnx through the reference, as
`python -m guppy_jax.web export` does (needs the `torch` and `web` extras).
"""
from __future__ import annotations

import sys

from . import cli
from .export.weight_files import FORMATS, export_weights, import_run


def build_parser():
    p = cli.make_parser("convert", __doc__, raw=True)
    p.epilog = __doc__.split("\n\n", 1)[1] + "\n" + cli.EXIT_CODES
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="weight file -> guppy-jax run directory", epilog=cli.EXIT_CODES)
    imp.add_argument("source", help="model.safetensors, pytorch_model.bin or best_model.pt")
    cli.add_run_dir(imp, "run directory to create", "--out", required=True)
    imp.add_argument("--tokenizer", help="tokenizer.json (default: the one beside the source)")
    imp.add_argument("--force", action="store_true", help="replace a run already in --run-dir")
    imp.add_argument("--trust-pickle", action="store_true",
                     help="unpickle a .pt/.bin that holds Python objects (a config class) with "
                          "weights_only=False: this RUNS any code the file names, so only for a file "
                          "you trust (the classes it names must import here)")
    cli.add_quiet(imp)
    exp = sub.add_parser("export", help="guppy-jax run directory -> model.safetensors (or pytorch_model.bin) "
                                        "+ config.json + tokenizer.json", epilog=cli.EXIT_CODES)
    exp.add_argument("run_dir_pos", nargs="?", metavar="RUN_DIR", help="run directory (or use --run-dir)")
    cli.add_run_dir(exp, "run directory to export (default: %(default)s)")
    exp.add_argument("--out", required=True, help="directory to write")
    exp.add_argument("--format", choices=sorted([*FORMATS, "onnx"]), default="safetensors",
                     help="safetensors: model.safetensors (default); bin: pytorch_model.bin, the "
                          "original's hub file (needs torch); onnx: guppy.onnx + guppy.int8.onnx for "
                          "onnxruntime and the browser page")
    exp.add_argument("--force", action="store_true", help="overwrite earlier exported files in --out")
    cli.add_quiet(exp)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "import":
            notes: list[str] = []
            where = import_run(args.source, args.run_dir, args.tokenizer, args.force, args.trust_pickle, notes)
            if not args.quiet:
                for note in notes:
                    print(f"note: {note}", file=sys.stderr)
            print(f"imported {args.source} into {where}; try: python -m guppy_jax.chat --run-dir {where}")
        else:
            run_dir = args.run_dir_pos or args.run_dir
            if args.format == "onnx":
                from .export.onnx_model import export_onnx
                export_onnx(run_dir, args.out, force=args.force)
                print(f"exported {run_dir} to {args.out}/guppy.onnx and guppy.int8.onnx (+ guppy.json, "
                      f"tokenizer.json)")
            else:
                weights = export_weights(run_dir, args.out, args.format, args.force)
                print(f"exported {run_dir} to {weights} (+ config.json, tokenizer.json)")
    except (ValueError, OSError) as err:  # WeightFileError, CheckpointError are ValueErrors
        return cli.error(err)
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main)
