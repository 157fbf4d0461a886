"""GuppyLM weight files in and out: safetensors both ways, the original's PyTorch pickles
(`best_model.pt`, `pytorch_model.bin`) in and out, and the config.json beside them.

Reading never runs code from a file. safetensors holds tensors only. A pickle is read with
torch's weights-only loader (`weights_only=True`); one that holds Python objects besides
tensors and plain containers is refused with our own message, which says how to convert a
file you trust, never to switch the check off.

Keys are the original's (`guppy_jax.convert_weights.key_map`). `lm_head.weight` is the tied
token embedding: both formats store it as its own copy of `tok_emb.weight` (safetensors
cannot hold two names for one buffer), so every file loads strictly into the original's
model, at the cost of one vocab x d_model table (6 MB for the 9M model).
"""
from __future__ import annotations

import json
import pickle
import re
import warnings
from pathlib import Path

import numpy as np

from .config import ConfigError, ModelConfig

FORMATS = {"safetensors": "model.safetensors", "bin": "pytorch_model.bin"}
SIDE_FILES = ("config.json", "tokenizer.json")


class WeightFileError(ValueError):
    """A weight or config file that cannot be used, and why (one line, naming the file)."""


# ----------------------------------------------------------------------------- config.json
def model_config_from(raw, where) -> ModelConfig:
    """A ModelConfig from a config dict: flat (GuppyLM's own keys or the hub names) or the
    original's training config, nested as {"model": {...}, "train": {...}}."""
    if raw is not None and not isinstance(raw, dict):
        raw = getattr(raw, "__dict__", None)
    if not isinstance(raw, dict):
        raise WeightFileError(f"{where}: the model config is not a dict")
    if isinstance(raw.get("model"), dict):
        raw = raw["model"]
    try:
        return ModelConfig.from_dict(raw)
    except (ConfigError, TypeError, ValueError) as err:
        raise WeightFileError(f"{where}: bad model config: {err}") from None


def read_config_beside(path) -> ModelConfig:
    """The model config in the config.json next to a weight file."""
    cfg_path = Path(path).parent / "config.json"
    if not cfg_path.exists():
        raise WeightFileError(f"{path}: a file of bare weights needs a config.json beside it ({cfg_path})")
    try:
        raw = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WeightFileError(f"{cfg_path}: not valid JSON: {err}") from None
    return model_config_from(raw, cfg_path)


# ----------------------------------------------------------------------------- reading
def is_safetensors(path) -> bool:
    """By name, or by content: 8 bytes of header length, then the JSON header's '{'."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_safetensors(path) -> dict:
    """{key: numpy array} from a safetensors file."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(str(path))
    except (SafetensorError, TypeError, ValueError) as err:
        raise WeightFileError(f"{path}: cannot be read as safetensors (truncated or damaged?): "
                              f"{str(err).strip().splitlines()[0][:160]}") from None


_FOUND_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def refusal(path, err: Exception) -> WeightFileError | None:
    """Our message for a pickle that torch's weights-only loader refused because it holds
    Python objects, or None when the error is something else (a damaged file)."""
    text = str(err)
    if not isinstance(err, pickle.UnpicklingError) or not re.search(r"Unsupported|GLOBAL|blocked", text):
        return None
    found = _FOUND_GLOBAL.search(text)
    what = f"the Python object {found.group(1)}" if found else "pickle instructions that build Python objects"
    return WeightFileError(
        f"{path}: refused: it holds {what}, not only tensors, and unpickling Python objects can run "
        f"any code the file names. guppy-jax loads weights only. To convert a file you trust: in "
        f"Python, torch.load it with weights_only=False, save its state dict with "
        f"safetensors.torch.save_file as model.safetensors, and import that (config.json beside it)")


def read_torch_pickle(path):
    """What a .pt/.bin holds, read by torch's weights-only loader (runs no code from the file)."""
    try:
        import torch
    except ImportError:
        raise WeightFileError(f"{path}: reading PyTorch pickles needs torch: pip install -e '.[torch]' "
                              f"(safetensors files need no torch)") from None
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols: our line says enough
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        refused = refusal(path, err)
        if refused is not None:
            raise refused from None
        first = (str(err).strip().splitlines() or ["the file ends early"])[0][:160]
        raise WeightFileError(f"{path}: cannot be read as a PyTorch checkpoint (truncated or not a "
                              f"checkpoint?): {type(err).__name__}: {first}") from None


def read_weights(path) -> tuple[dict, ModelConfig, int]:
    """(state dict, model config, step) from a weight file: model.safetensors or a bare
    pytorch_model.bin with a config.json beside it, or a best_model.pt-style dict."""
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"{path}: file not found")
    if is_safetensors(path):
        state_dict = read_safetensors(path)
        return state_dict, read_config_beside(path), 0
    obj = read_torch_pickle(path)
    if not isinstance(obj, dict):
        raise WeightFileError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    if "model_state_dict" in obj:
        state_dict, step = obj["model_state_dict"], int(obj.get("step", 0) or 0)
        raw = obj.get("config")
        cfg = model_config_from(raw, path) if raw is not None else read_config_beside(path)
    else:
        state_dict, step, cfg = obj, 0, read_config_beside(path)
    if not isinstance(state_dict, dict) or not all(hasattr(v, "shape") for v in state_dict.values()):
        raise WeightFileError(f"{path}: the state dict holds non-tensor values")
    return state_dict, cfg, step


def check_finite(state_dict: dict, path) -> None:
    """Refuse weights that hold NaN or inf: a model made of them answers nothing."""
    bad = []
    for key, value in state_dict.items():
        finite = np.isfinite(np.asarray(value, np.float32))
        if not finite.all():
            bad.append(f"{key} ({int((~finite).sum())} values)")
    if bad:
        raise WeightFileError(f"{path}: weights hold NaN or inf: {', '.join(bad[:4])}"
                              + (" ..." if len(bad) > 4 else ""))


# ----------------------------------------------------------------------------- writing
def write_weights(state_dict: dict, path, fmt: str) -> Path:
    """Write a numpy state dict as `fmt` ("safetensors" or "bin"); every key its own buffer."""
    path = Path(path)
    arrays = {key: np.ascontiguousarray(value) for key, value in state_dict.items()}
    if fmt == "safetensors":
        from safetensors.numpy import save_file
        save_file(arrays, str(path), metadata={"format": "pt"})
    elif fmt == "bin":
        try:
            import torch
        except ImportError:
            raise WeightFileError("writing pytorch_model.bin needs torch: pip install -e '.[torch]' "
                                  "(or export --format safetensors, which does not)") from None
        torch.save({key: torch.from_numpy(value.copy()) for key, value in arrays.items()}, path)
    else:
        raise WeightFileError(f"unknown weight format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return path


# ----------------------------------------------------------------------------- runs
def params_from_file(path) -> tuple[dict, ModelConfig, int]:
    """(Flax params, model config, step) from a weight file, every key, shape and value checked."""
    from .convert_weights import WeightsError, state_dict_to_params
    state_dict, cfg, step = read_weights(path)
    try:
        params = state_dict_to_params(state_dict, cfg)
    except WeightsError as err:
        raise WeightFileError(f"{path}: {err}") from None
    check_finite(state_dict, path)
    return params, cfg, step


def import_run(src, out, tokenizer=None, force: bool = False) -> Path:
    """Write a run directory (config, tokenizer, one checkpoint) from a weight file.
    An existing run is never overwritten unless `force`."""
    import jax
    import jax.numpy as jnp

    from .checkpoint import RunCheckpoints, RunLock, clear_run, holds_checkpoints, write_run_config
    from .config import PRESETS
    from .steps import create_state
    from .tokenizer import load_tokenizer
    params, cfg, step = params_from_file(src)
    tok_path = Path(tokenizer) if tokenizer else Path(src).parent / "tokenizer.json"
    if not tok_path.exists():
        raise WeightFileError(f"no tokenizer: pass --tokenizer (looked for {tok_path})")
    load_tokenizer(tok_path)  # a broken tokenizer fails here, before anything is written
    out = Path(out)
    if (holds_checkpoints(out) or (out / "config.json").exists()) and not force:
        raise WeightFileError(f"{out} already holds a run: choose a new --run-dir, or pass --force to "
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


def check_export_target(run_dir, out, files, force: bool, error=WeightFileError) -> None:
    """Never write an export into a run directory, nor over earlier `files` in `out` unless
    `force` (raises `error`: the caller's exception type)."""
    out = Path(out)
    if out.resolve() == Path(run_dir).resolve() or (out / "checkpoints").exists() or (out / "best").exists():
        raise error(f"{out} is a run directory: exporting into it would overwrite its files; "
                    f"choose another --out")
    existing = [name for name in files if (out / name).exists()]
    if existing and not force:
        raise error(f"{out} already holds {', '.join(existing)}: choose another --out, or pass "
                    f"--force to overwrite them")


def export_run(run_dir, out, fmt: str = "safetensors", force: bool = False) -> Path:
    """Write a run's weights (the original's keys) as `fmt`, with config.json and
    tokenizer.json beside them; returns the weight file's path."""
    import jax

    from .checkpoint import load_for_inference
    from .convert_weights import params_to_state_dict
    if fmt not in FORMATS:
        raise WeightFileError(f"unknown weight format {fmt!r}: choose one of {', '.join(FORMATS)}")
    check_export_target(run_dir, out, (FORMATS[fmt], *SIDE_FILES), force)
    cfg, params, tok = load_for_inference(run_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = write_weights(params_to_state_dict(jax.device_get(params), cfg), out / FORMATS[fmt], fmt)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    tok.save(str(out / "tokenizer.json"))
    return weights
