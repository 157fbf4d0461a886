"""Move GuppyLM checkpoints between the original PyTorch format and guppy-jax runs.

    python -m guppy_jax.convert import best_model.pt --run-dir runs/original
    python -m guppy_jax.convert import pytorch_model.bin --run-dir runs/original   # config.json beside it
    python -m guppy_jax.convert export --run-dir runs/guppy --out exported/

`import` takes a `best_model.pt`-style dict ({"model_state_dict", "config", ...}) or a bare
state dict with a config.json beside it (GuppyLM's own keys or the hub names) and writes a
run directory that chat and eval load; the tokenizer comes from --tokenizer or from a
tokenizer.json beside the checkpoint. `export` writes pytorch_model.bin (the original
state-dict keys), config.json and tokenizer.json, which reference_torch loads strictly.
Needs the `torch` extra.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from . import cli
from .config import ConfigError, ModelConfig, PRESETS
from .convert_weights import WeightsError, params_to_state_dict, state_dict_to_params


class ConvertError(ValueError):
    """A checkpoint that cannot be converted, and why."""


def _torch():
    try:
        import torch
    except ImportError:
        raise ConvertError("converting PyTorch checkpoints needs torch: pip install -e '.[torch]'") from None
    return torch


def read_torch_checkpoint(path) -> tuple[dict, ModelConfig, int]:
    """(state dict, model config, step) from a .pt dict or a bare state dict + config.json."""
    torch = _torch()
    path = Path(path)
    if not path.exists():
        raise ConvertError(f"{path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise ConvertError(f"{path}: cannot be read as a PyTorch checkpoint (truncated or not a "
                           f"checkpoint?): {type(err).__name__}: {str(err)[:200]}") from None
    if not isinstance(obj, dict):
        raise ConvertError(f"{path}: expected a dict, found {type(obj).__name__}")
    step = 0
    if "model_state_dict" in obj:
        state_dict, raw_cfg, step = obj["model_state_dict"], obj.get("config"), int(obj.get("step", 0))
    else:
        state_dict, raw_cfg = obj, None
    if raw_cfg is None:
        cfg_path = path.parent / "config.json"
        if not cfg_path.exists():
            raise ConvertError(f"{path}: a bare state dict needs a config.json beside it ({cfg_path})")
        try:
            raw_cfg = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as err:
            raise ConvertError(f"{cfg_path}: not valid JSON: {err}") from None
    if not isinstance(raw_cfg, dict):
        raw_cfg = getattr(raw_cfg, "__dict__", None) or {}
    try:
        cfg = ModelConfig.from_dict(raw_cfg)
    except (ConfigError, TypeError) as err:
        raise ConvertError(f"{path}: bad model config: {err}") from None
    if not all(hasattr(v, "shape") for v in state_dict.values()):
        raise ConvertError(f"{path}: the state dict holds non-tensor values")
    return state_dict, cfg, step


def check_finite(state_dict: dict, path) -> None:
    """Refuse weights that hold NaN or inf: a model made of them answers nothing."""
    import numpy as np
    bad = [f"{key} ({int((~np.isfinite(np.asarray(v, np.float32))).sum())} values)"
           for key, v in state_dict.items() if not np.isfinite(np.asarray(v, np.float32)).all()]
    if bad:
        raise ConvertError(f"{path}: weights hold NaN or inf: {', '.join(bad[:4])}"
                           + (" ..." if len(bad) > 4 else ""))


def import_checkpoint(src, out, tokenizer=None, force: bool = False) -> Path:
    """Write a run directory (config, tokenizer, one checkpoint) from an original checkpoint.
    An existing run is never overwritten unless `force`."""
    import jax
    import jax.numpy as jnp

    from .checkpoint import RunCheckpoints, RunLock, clear_run, holds_checkpoints, write_run_config
    from .steps import create_state
    from .tokenizer import load_tokenizer
    state_dict, cfg, step = read_torch_checkpoint(src)
    check_finite(state_dict, src)
    params = state_dict_to_params(state_dict, cfg)
    tok_path = Path(tokenizer) if tokenizer else Path(src).parent / "tokenizer.json"
    if not tok_path.exists():
        raise ConvertError(f"no tokenizer: pass --tokenizer (looked for {tok_path})")
    load_tokenizer(tok_path)  # a broken tokenizer fails here, before anything is written
    out = Path(out)
    if (holds_checkpoints(out) or (out / "config.json").exists()) and not force:
        raise ConvertError(f"{out} already holds a run: choose a new --run-dir, or pass --force to "
                           f"replace it")
    with RunLock(out):
        clear_run(out)
        train_cfg = PRESETS["guppy-9m"].replace(model=cfg)
        write_run_config(out, train_cfg, "imported", tok_path)
        state = create_state(cfg, train_cfg.optim, jax.tree_util.tree_map(jnp.asarray, params))
        state = state.replace(step=jnp.asarray(step, jnp.int32))
        ckpts = RunCheckpoints(out)
        try:
            ckpts.save(state, {"data_position": {"epoch": 0, "index": 0}, "source": str(src)})
        finally:
            ckpts.close()
    return out


EXPORT_FILES = ("pytorch_model.bin", "config.json", "tokenizer.json")


def check_export_target(run_dir, out, force: bool) -> None:
    """Never write an export into a run directory, nor over earlier files unless `force`."""
    out = Path(out)
    if out.resolve() == Path(run_dir).resolve() or (out / "checkpoints").exists() or (out / "best").exists():
        raise ConvertError(f"{out} is a run directory: exporting into it would overwrite its config.json; "
                           f"choose another --out")
    existing = [name for name in EXPORT_FILES if (out / name).exists()]
    if existing and not force:
        raise ConvertError(f"{out} already holds {', '.join(existing)}: choose another --out, or pass "
                           f"--force to overwrite them")


def export_checkpoint(run_dir, out, force: bool = False) -> Path:
    import jax

    from .checkpoint import load_for_inference
    torch = _torch()
    check_export_target(run_dir, out, force)
    cfg, params, tok = load_for_inference(run_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state_dict = params_to_state_dict(jax.device_get(params), cfg)
    torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, out / "pytorch_model.bin")
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    tok.save(str(out / "tokenizer.json"))
    return out


def build_parser():
    p = cli.make_parser("convert", __doc__, raw=True)
    p.epilog = __doc__.split("\n\n", 1)[1] + "\n" + cli.EXIT_CODES
    sub = p.add_subparsers(dest="command", required=True)
    imp = sub.add_parser("import", help="PyTorch checkpoint -> guppy-jax run directory", epilog=cli.EXIT_CODES)
    imp.add_argument("source", help="best_model.pt or pytorch_model.bin")
    cli.add_run_dir(imp, "run directory to create", "--out", required=True)
    imp.add_argument("--tokenizer", help="tokenizer.json (default: the one beside the source)")
    imp.add_argument("--force", action="store_true", help="replace a run already in --run-dir")
    cli.add_quiet(imp)
    exp = sub.add_parser("export", help="guppy-jax run directory -> pytorch_model.bin + config.json",
                         epilog=cli.EXIT_CODES)
    exp.add_argument("run_dir_pos", nargs="?", metavar="RUN_DIR", help="run directory (or use --run-dir)")
    cli.add_run_dir(exp, "run directory to export (default: %(default)s)")
    exp.add_argument("--out", required=True, help="directory to write")
    exp.add_argument("--force", action="store_true", help="overwrite earlier exported files in --out")
    cli.add_quiet(exp)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "import":
            where = import_checkpoint(args.source, args.run_dir, args.tokenizer, args.force)
            print(f"imported {args.source} into {where}; try: python -m guppy_jax.chat --run-dir {where}")
        else:
            run_dir = args.run_dir_pos or args.run_dir
            where = export_checkpoint(run_dir, args.out, args.force)
            print(f"exported {run_dir} to {where / 'pytorch_model.bin'} (+ config.json, tokenizer.json)")
    except (ValueError, OSError) as err:  # ConvertError, WeightsError, CheckpointError are ValueErrors
        return cli.error(err)
    return cli.EXIT_OK


if __name__ == "__main__":
    cli.run(main)
