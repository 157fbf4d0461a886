"""GuppyLM weight files in and out: safetensors both ways, the original's PyTorch pickles
(`best_model.pt`, `pytorch_model.bin`) in and out, and the config.json beside them.

Reading never runs code from a file unless asked. safetensors holds tensors only. A pickle is
read with torch's weights-only loader (`weights_only=True`); one that holds Python objects
besides tensors and plain containers is refused with our own message, which says how to
convert a file you trust. Only `trust_pickle=True` (`convert import --trust-pickle`) unpickles
such a file in full (`weights_only=False`, which runs any code it names), and says so on stderr.

Half-precision weights (bfloat16, float16) in either format are upcast to float32, exactly,
with a note; safetensors' numpy reader has no bfloat16, so those tensors are decoded here.

Keys are the original's (`guppy_jax.convert_weights.key_map`). `lm_head.weight` is the tied
token embedding: both formats store it as its own copy of `tok_emb.weight` (safetensors
cannot hold two names for one buffer), so every file loads strictly into the original's
model, at the cost of one vocab x d_model table (6 MB for the 9M model).
"""
from __future__ import annotations

import json
import pickle
import re
import sys
import warnings
from pathlib import Path

import numpy as np

from ..core.config import ConfigError, ModelConfig

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


def gist(err: Exception, limit: int = 160) -> str:
    """The meaningful start of a library's error text: its first line, whole sentences while
    they fit in `limit` characters, else the first one cut at a word with an ellipsis."""
    first = (str(err).strip().splitlines() or [""])[0].strip()
    if len(first) <= limit:
        return first
    sentences = re.split(r"(?<=[.!?])\s+", first)
    kept = sentences[0]
    for sentence in sentences[1:]:
        if len(kept) + 1 + len(sentence) > limit:
            break
        kept += " " + sentence
    if len(kept) <= limit:
        return kept
    cut = kept[:limit - 3].rsplit(" ", 1)[0].rstrip(" ,;:")
    return cut + "..."


# the half precisions by their safetensors names; numpy has no bfloat16, so those are decoded here
_BF16, _HALF = "BF16", {"BF16": "bfloat16", "F16": "float16"}


def _read_safetensors(path) -> tuple[dict, dict]:
    """({key: numpy array}, {key: safetensors dtype}) from a safetensors file, bfloat16
    tensors decoded to float32 (a bfloat16 is the upper half of a float32's bits)."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="numpy") as f:  # checks the header and the offsets
            with open(path, "rb") as raw:
                start = 8 + int.from_bytes(raw.read(8), "little")
                header = json.loads(raw.read(start - 8))
                dtypes = {key: header[key]["dtype"] for key in f.keys()}
                arrays = {}
                for key, dtype in dtypes.items():
                    if dtype != _BF16:
                        arrays[key] = f.get_tensor(key)
                        continue
                    begin, end = header[key]["data_offsets"]
                    raw.seek(start + begin)
                    bits = np.frombuffer(raw.read(end - begin), dtype="<u2").astype("<u4") << 16
                    arrays[key] = bits.view("<f4").reshape(header[key]["shape"])
    except (SafetensorError, TypeError, ValueError, OSError) as err:
        raise WeightFileError(f"{path}: cannot be read as safetensors (truncated or damaged?): "
                              f"{gist(err)}") from None
    return arrays, dtypes


def read_safetensors(path) -> dict:
    """{key: numpy array} from a safetensors file (bfloat16 tensors as float32)."""
    return _read_safetensors(path)[0]


_FOUND_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def conversion_recipe(path) -> tuple[str, Path]:
    """One line of Python that converts a trusted pickle (a best_model.pt-style dict or a bare
    state dict) to model.safetensors + config.json in a new directory beside it, and that
    directory. Every tensor is cloned: the original's tied lm_head.weight and tok_emb.weight
    share one buffer, which safetensors refuses to save."""
    path = Path(path)
    out = path.parent / f"{path.stem}_safetensors"
    code = (f"import json, shutil, pathlib, torch, safetensors.torch as st; "
            f"src, out = pathlib.Path({str(path)!r}), pathlib.Path({str(out)!r}); "
            f"out.mkdir(exist_ok=True); c = torch.load(src, weights_only=False); "
            f"sd = c.get('model_state_dict', c); "
            f"st.save_file({{k: v.contiguous().clone() for k, v in sd.items() if torch.is_tensor(v)}}, "
            f"str(out / 'model.safetensors')); cfg = c.get('config'); "
            f"(out / 'config.json').write_text(json.dumps(cfg if isinstance(cfg, dict) else vars(cfg), "
            f"default=str)) if cfg is not None else shutil.copy(src.parent / 'config.json', out)")
    return code, out


def holds_what(err: Exception) -> str:
    found = _FOUND_GLOBAL.search(str(err))
    return f"the Python object {found.group(1)}" if found else "pickle instructions that build Python objects"


def refusal(path, err: Exception) -> WeightFileError | None:
    """Our message for a pickle that torch's weights-only loader refused because it holds
    Python objects, or None when the error is something else (a damaged file)."""
    text = str(err)
    if not isinstance(err, pickle.UnpicklingError) or not re.search(r"Unsupported|GLOBAL|blocked", text):
        return None
    code, out = conversion_recipe(path)
    return WeightFileError(
        f"{path}: refused: it holds {holds_what(err)}, not only tensors, and unpickling Python objects "
        f"can run any code the file names; guppy-jax loads weights only. For a file you trust: pass "
        f"--trust-pickle to `python -m guppy_jax.convert import`, or convert it yourself in Python "
        f"(where the objects' classes import): `{code}`, then import {out / FORMATS['safetensors']}")


def read_torch_pickle(path, trust_pickle: bool = False):
    """What a .pt/.bin holds, read by torch's weights-only loader (runs no code from the file).
    A pickle that holds Python objects is refused, unless `trust_pickle`: then it is loaded
    with weights_only=False, after a warning on stderr that this runs the code it names."""
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
        if refused is None:
            raise WeightFileError(f"{path}: cannot be read as a PyTorch checkpoint (truncated or not a "
                                  f"checkpoint?): {type(err).__name__}: {gist(err) or 'the file ends early'}"
                                  ) from None
        if not trust_pickle:
            raise refused from None
        what = holds_what(err)
    print(f"warning: {path} holds {what}: --trust-pickle unpickles it with weights_only=False, which "
          f"runs any code the file names", file=sys.stderr, flush=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=False)
    except (ImportError, AttributeError) as err:  # a class the pickle names is not importable here
        raise WeightFileError(f"{path}: --trust-pickle: the pickle names code that cannot be imported "
                              f"here ({gist(err)}): run from the directory of the project that wrote it, "
                              f"or put that project on PYTHONPATH") from None
    except Exception as err:
        raise WeightFileError(f"{path}: --trust-pickle: unpickling failed: {type(err).__name__}: "
                              f"{gist(err)}") from None


def upcast_half(state_dict: dict, dtypes: dict, path) -> tuple[dict, str | None]:
    """Half-precision tensors (bfloat16, float16; `dtypes` names each key's) as float32, and
    the note that says so, or None when there were none. The upcast is exact."""
    half = {key: name for key, name in dtypes.items() if name in _HALF.values()}
    if not half:
        return state_dict, None
    out = dict(state_dict)
    for key in half:
        value = out[key]
        out[key] = value.float() if hasattr(value, "float") else np.asarray(value, np.float32)
    kinds = " and ".join(sorted(set(half.values())))
    which = "weights are" if len(half) == len(dtypes) else f"{len(half)} of {len(dtypes)} tensors are"
    return out, f"{path}: {which} {kinds}: upcast to float32"


def read_weights(path, trust_pickle: bool = False, notes: list | None = None) -> tuple[dict, ModelConfig, int]:
    """(state dict, model config, step) from a weight file: model.safetensors or a bare
    pytorch_model.bin with a config.json beside it, or a best_model.pt-style dict.
    Half-precision tensors come back as float32, with a note appended to `notes` when given.
    `trust_pickle` lets a pickle that holds Python objects run (see read_torch_pickle)."""
    path = Path(path)
    if not path.is_file():
        raise WeightFileError(f"{path}: file not found")
    if is_safetensors(path):
        state_dict, dtypes = _read_safetensors(path)
        dtypes = {key: _HALF.get(dtype, dtype) for key, dtype in dtypes.items()}
        cfg, step = read_config_beside(path), 0
    else:
        obj = read_torch_pickle(path, trust_pickle)
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
        dtypes = {key: str(value.dtype).removeprefix("torch.") for key, value in state_dict.items()}
    state_dict, note = upcast_half(state_dict, dtypes, path)
    if note and notes is not None:
        notes.append(note)
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
    if fmt == "safetensors":  # written by us, not safetensors.save_file, whose file is 0600 whatever the umask
        from safetensors.numpy import save
        path.write_bytes(save(arrays, metadata={"format": "pt"}))
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
def params_from_file(path, trust_pickle: bool = False, notes: list | None = None
                     ) -> tuple[dict, ModelConfig, int]:
    """(Flax params, model config, step) from a weight file, every key, shape and value checked
    (`trust_pickle` and `notes` as in read_weights)."""
    from .convert_weights import WeightsError, state_dict_to_params
    state_dict, cfg, step = read_weights(path, trust_pickle, notes)
    try:
        params = state_dict_to_params(state_dict, cfg)
    except WeightsError as err:
        raise WeightFileError(f"{path}: {err}") from None
    check_finite(state_dict, path)
    return params, cfg, step


def import_run(src, out, tokenizer=None, force: bool = False, trust_pickle: bool = False,
               notes: list | None = None) -> Path:
    """Write a run directory (config, tokenizer, one checkpoint) from a weight file.
    An existing run is never overwritten unless `force`. What the caller should tell the user
    (half-precision weights upcast) is appended to `notes` when given."""
    import jax
    import jax.numpy as jnp

    from ..training.checkpoints import RunCheckpoints, RunLock, clear_run, holds_checkpoints, write_run_config
    from ..core.config import PRESETS
    from ..core.steps import create_state
    from ..core.tokenizer import load_tokenizer
    params, cfg, step = params_from_file(src, trust_pickle, notes)
    tok_path = Path(tokenizer) if tokenizer else Path(src).parent / "tokenizer.json"
    if not tok_path.exists():
        given = "the --tokenizer given" if tokenizer else "no --tokenizer given, and none beside the weights"
        raise WeightFileError(f"{tok_path}: not found ({given}): pass --tokenizer with the tokenizer.json the "
                              f"weights were trained with (the original GuppyLM keeps its tokenizer at "
                              f"data/tokenizer.json in its repository)")
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


def export_weights(run_dir, out, fmt: str = "safetensors", force: bool = False) -> Path:
    """Write a run's weights (the original's keys) as `fmt`, with config.json and
    tokenizer.json beside them; returns the weight file's path."""
    import jax

    from ..training.checkpoints import load_for_inference
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
