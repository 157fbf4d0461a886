"""Guppy in the browser: export a run to ONNX, or build the static chat page around it.

    python -m guppy_jax.web export --run-dir runs/guppy --out exported-onnx/
    python -m guppy_jax.web build --run-dir runs/guppy --out site/
    python -m http.server --directory site 8000     # then open http://127.0.0.1:8000

`export` writes guppy.onnx (float32), guppy.int8.onnx (onnxruntime's dynamic int8
quantization), guppy.json and tokenizer.json: one self-contained graph that takes the
key/value cache as inputs and returns it grown, for a prefill and then one position per
token. `build` also copies the page (web/) and its libraries (installed by
`npm ci --prefix web`) into a static folder for any host. Needs the `torch` and `web` extras.
"""
from __future__ import annotations

import sys
from pathlib import Path

from . import cli


def build_parser():
    p = cli.make_parser("web", __doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="{export,build}")
    exp = sub.add_parser("export", help="a run -> ONNX files (float32 and int8)",
                         formatter_class=p.formatter_class, epilog=cli.EXIT_CODES)
    site = sub.add_parser("build", help="a run -> a static chat page (ONNX inside)",
                          formatter_class=p.formatter_class, epilog=cli.EXIT_CODES)
    for sp, what in ((exp, "folder for the ONNX files"), (site, "folder for the static page")):
        cli.add_run_dir(sp, "run directory written by guppy_jax.train (or convert import)")
        sp.add_argument("--out", required=True, metavar="DIR", help=what)
        sp.add_argument("--force", action="store_true", help="overwrite an earlier export or page in --out")
        sp.add_argument("--latest", action="store_true", help="use the latest checkpoint, not the best-eval one")
        sp.add_argument("--no-int8", action="store_true", help="skip the int8 model (the page then loads float32)")
        cli.add_quiet(sp)
    return p


def mib(n: int) -> str:
    return f"{n / 2 ** 20:.1f} MiB"


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .training.checkpoints import CheckpointError
    from .export.onnx_model import OnnxExportError, export_onnx
    from .export.site import SiteError, build_site
    if not (Path(args.run_dir) / "config.json").exists():
        return cli.error(f"no trained model in {args.run_dir}: train one first (python -m guppy_jax.train "
                         f"--run-dir {args.run_dir})")
    notes: list[str] = []
    try:
        if args.command == "export":
            meta = export_onnx(args.run_dir, args.out, force=args.force, best=not args.latest,
                              int8=not args.no_int8, notes=notes)
        else:
            built = build_site(args.run_dir, args.out, force=args.force, best=not args.latest,
                               int8=not args.no_int8, notes=notes)
            meta = built["meta"]
    except (CheckpointError, OnnxExportError, SiteError, ValueError, OSError) as err:
        return cli.error(err)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    where = Path(args.out) / ("model" if args.command == "build" else "")
    for name, size in meta["files"].items():
        print(f"{where / name}: {mib(size)}")
    if args.command == "build":
        for precision, size in built["load_bytes"].items():
            print(f"page load with the {precision} model: {mib(size)}")
        if not args.quiet:
            print(f"serve it: python -m http.server --directory {args.out} 8000")
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main, compile_cache=True)
