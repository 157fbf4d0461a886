"""The static chat page: web/'s sources, the npm libraries it needs and an exported model.

    site/index.html, app.js, guppy.js           the page (sources in web/)
    site/lib/onnxruntime-web.js, ort-wasm-simd-threaded.{js,wasm}   onnxruntime-web (wasm only)
    site/lib/tokenizers.js                      @huggingface/tokenizers
    site/model/guppy.onnx, guppy.int8.onnx, guppy.json, tokenizer.json

The libraries come from web/node_modules, installed from web/package-lock.json by `npm ci`.
Any static host serves the folder; no special headers (the wasm runs single-threaded). The
ES modules are renamed from .mjs to .js, which every server sends as JavaScript (not every
server maps .mjs, and a module sent as octet-stream does not run).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..core.paths import REPO

WEB = REPO / "web"
PAGE_FILES = ("index.html", "app.js", "guppy.js")
LIBRARIES = {  # file in the site's lib/ -> where npm ci puts it
    "onnxruntime-web.js": "onnxruntime-web/dist/ort.wasm.min.mjs",
    "ort-wasm-simd-threaded.js": "onnxruntime-web/dist/ort-wasm-simd-threaded.mjs",
    "ort-wasm-simd-threaded.wasm": "onnxruntime-web/dist/ort-wasm-simd-threaded.wasm",
    "tokenizers.js": "@huggingface/tokenizers/dist/tokenizers.min.mjs",
}
# what a visit downloads besides the model file itself
ALWAYS_LOADED = [*PAGE_FILES, *(f"lib/{name}" for name in LIBRARIES), "model/guppy.json", "model/tokenizer.json"]


class SiteError(ValueError):
    """A page that cannot be built, and why."""


def library_sources(web_dir: Path = WEB) -> dict[str, Path]:
    """{name in lib/: installed file}; SiteError naming the setup step when one is missing."""
    found = {name: web_dir / "node_modules" / rel for name, rel in LIBRARIES.items()}
    missing = [str(path) for path in found.values() if not path.exists()]
    if missing:
        raise SiteError(f"{missing[0]} is missing: install the page's libraries first with "
                        f"`npm ci --ignore-scripts --prefix {web_dir}` (node and npm needed)")
    return found


def check_site_target(out: Path, force: bool) -> None:
    """Refuse a folder holding anything but an earlier build, and an earlier build unless `force`."""
    if not out.exists() or not any(out.iterdir()):
        return
    ours = set(PAGE_FILES) | {"lib", "model"}
    strangers = sorted(p.name for p in out.iterdir() if p.name not in ours)
    if strangers:
        raise SiteError(f"{out} holds other files ({', '.join(strangers[:4])}): build into a new or empty folder")
    if not force:
        raise SiteError(f"{out} already holds a built page: pass --force to replace it")


def copy_page(out: Path, web_dir: Path = WEB) -> None:
    """The page's sources and libraries into `out` (the model goes in out/model)."""
    libraries = library_sources(web_dir)
    (out / "lib").mkdir(parents=True, exist_ok=True)
    for name in PAGE_FILES:
        shutil.copyfile(web_dir / name, out / name)
    for name, source in libraries.items():
        shutil.copyfile(source, out / "lib" / name)


def load_sizes(out: Path) -> dict[str, int]:
    """Bytes a first visit downloads, for each model file: the page, libraries and model."""
    base = sum((out / name).stat().st_size for name in ALWAYS_LOADED)
    sizes = {}
    for precision, model in (("int8", "model/guppy.int8.onnx"), ("float32", "model/guppy.onnx")):
        if (out / model).exists():
            sizes[precision] = base + (out / model).stat().st_size
    return sizes


def build_site(run_dir, out, *, force: bool = False, best: bool = True, int8: bool = True,
               notes: list | None = None) -> dict:
    """Export the run and assemble the page in `out`; returns {"meta", "load_bytes"}."""
    from .onnx_model import export_onnx
    out = Path(out)
    check_site_target(out, force)
    library_sources()  # fail before the (slower) export
    if (out / "model").exists():
        shutil.rmtree(out / "model")
    meta = export_onnx(run_dir, out / "model", force=True, best=best, int8=int8, notes=notes)
    copy_page(out)
    return {"meta": meta, "load_bytes": load_sizes(out)}
