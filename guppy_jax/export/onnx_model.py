"""GuppyLM as ONNX, through the parity-tested PyTorch reference, and a Python runner for it.

JAX params -> `reference_torch.GuppyLM` (convert_weights.torch_model_from_params) ->
`torch.onnx.export` (the TorchScript exporter, `dynamo=False`: its traced sizes keep the
cache length dynamic, and it writes one self-contained file). One graph serves both phases:

    inputs   tokens_BT (int64), past_k / past_v (L, B, H, S, K) float32
    outputs  logits_BTV, present_k / present_v (L, B, H, S + T, K)

Prefill passes the prompt with an empty past (S = 0); each decode step passes one token and
the cache the previous call returned, so a new token costs one position. The T tokens take
positions S .. S + T - 1. `guppy.int8.onnx` is the same graph with onnxruntime's dynamic
int8 quantization of its matmul weights.

Needs the `torch` and `web` extras (torch, onnx, onnxruntime).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..core.config import ModelConfig

FLOAT_FILE, INT8_FILE, META_FILE, TOKENIZER_FILE = "guppy.onnx", "guppy.int8.onnx", "guppy.json", "tokenizer.json"
EXPORT_FILES = (FLOAT_FILE, INT8_FILE, META_FILE, TOKENIZER_FILE)
INPUTS, OUTPUTS = ("tokens", "past_k", "past_v"), ("logits", "present_k", "present_v")
OPSET = 17


class OnnxExportError(ValueError):
    """An export that cannot be made or a file that is not one of ours."""


def cached_step_module(model):
    """A torch module around a reference GuppyLM whose key/value cache is explicit tensors:
    (tokens_BT, past_k, past_v) -> (logits_BTV, present_k, present_v). The reference's own
    dict cache is built from the inputs and read back, so its computation is unchanged."""
    import torch

    class CachedStep(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, tokens_BT, past_k_LBHSK, past_v_LBHSK):
            cache = [{"k": past_k_LBHSK[i], "v": past_v_LBHSK[i]} for i in range(len(self.model.blocks))]
            logits_BTV = self.model(tokens_BT, cache=cache)
            return (logits_BTV, torch.stack([c["k"] for c in cache]), torch.stack([c["v"] for c in cache]))

    return CachedStep().eval()


def empty_cache(cfg: ModelConfig, batch_size: int = 1, length: int = 0) -> np.ndarray:
    """A (L, B, H, length, K) float32 zero cache: the past of a prefill when length is 0."""
    return np.zeros((cfg.n_layers, batch_size, cfg.n_heads, length, cfg.head_dim), np.float32)


def export_float(params, cfg: ModelConfig, path) -> Path:
    """Write the float32 graph of these Flax params to `path`, weights inside the file."""
    import warnings

    import torch

    from .convert_weights import torch_model_from_params
    step = cached_step_module(torch_model_from_params(params, cfg))
    # trace with a non-empty past and several tokens, so that no size is taken for a constant
    example = (torch.ones((1, 3), dtype=torch.long), torch.from_numpy(empty_cache(cfg, 1, 2)),
               torch.from_numpy(empty_cache(cfg, 1, 2)))
    cache_axes = {1: "batch", 3: "past"}
    axes = {"tokens": {0: "batch", 1: "new"}, "past_k": cache_axes, "past_v": cache_axes,
            "logits": {0: "batch", 1: "new"}, "present_k": {1: "batch", 3: "total"},
            "present_v": {1: "batch", 3: "total"}}
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about the max_seq_len check: checked here instead
        torch.onnx.export(step, example, str(path), dynamo=False, input_names=list(INPUTS),
                          output_names=list(OUTPUTS), dynamic_axes=axes, opset_version=OPSET,
                          do_constant_folding=True)
    check_self_contained(path)
    return path


def tie_head(path) -> int:
    """Store the tied output head once: constant folding leaves it as a second, transposed copy
    of the token embedding (+6 MiB at 9M). The copy becomes a Transpose node of the embedding,
    which onnxruntime folds when it loads the file. Returns the bytes saved."""
    import onnx
    from onnx import helper, numpy_helper
    model = onnx.load(str(path))
    graph = model.graph
    tables = {t.name: t for t in graph.initializer}
    embedding = next(tables[n.input[0]] for n in graph.node if n.op_type == "Gather" and n.input[0] in tables)
    emb_T = numpy_helper.to_array(embedding).T
    copies = [t for t in graph.initializer if tuple(t.dims) == emb_T.shape and t.name != embedding.name
              and np.array_equal(numpy_helper.to_array(t), emb_T)]
    for i, copy in enumerate(copies):
        graph.node.insert(0, helper.make_node("Transpose", [embedding.name], [copy.name], perm=[1, 0],
                                              name=f"tied_head_{i}"))
        graph.initializer.remove(copy)
    onnx.save(model, str(path))
    return len(copies) * emb_T.nbytes


def check_self_contained(path) -> None:
    """OnnxExportError if the model keeps any tensor in an external data file."""
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    outside = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if outside:
        raise OnnxExportError(f"{path}: {len(outside)} tensors are stored outside the file ({outside[0]}, ...)")


def quantize_int8(src, dst) -> Path:
    """onnxruntime's dynamic quantization: int8 matmul weights, activations quantized per call."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR  # its advice to pre-process is for conv nets
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    check_self_contained(dst)
    return Path(dst)


def metadata(cfg: ModelConfig, out: Path) -> dict:
    """What the page needs besides the graph: the config, the I/O names and the file sizes."""
    fields = ("vocab_size", "max_seq_len", "d_model", "n_layers", "n_heads", "ffn_hidden", "pad_id",
              "bos_id", "eos_id")
    return {"format": "guppy-onnx-1", "model": {k: getattr(cfg, k) for k in fields},
            "head_dim": cfg.head_dim, "inputs": list(INPUTS), "outputs": list(OUTPUTS),
            "files": {name: (out / name).stat().st_size
                      for name in (FLOAT_FILE, INT8_FILE, TOKENIZER_FILE) if (out / name).exists()}}


def check_target(run_dir, out, force: bool) -> None:
    """Never write into a run directory, nor over earlier exported files unless `force`."""
    from .weight_files import check_export_target
    check_export_target(run_dir, out, EXPORT_FILES, force, error=OnnxExportError)


def export_params(params, cfg: ModelConfig, tokenizer_json, out, int8: bool = True) -> dict:
    """guppy.onnx (+ guppy.int8.onnx), tokenizer.json and guppy.json in `out`; returns the metadata."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    export_float(params, cfg, out / FLOAT_FILE)
    (out / INT8_FILE).unlink(missing_ok=True)
    if int8:  # from the untied graph: the head then gets an int8 matmul of its own (+1.5 MiB at 9M)
        quantize_int8(out / FLOAT_FILE, out / INT8_FILE)
    tie_head(out / FLOAT_FILE)
    shutil.copyfile(tokenizer_json, out / TOKENIZER_FILE)
    meta = metadata(cfg, out)
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def export_onnx(run_dir, out, *, force: bool = False, best: bool = True, int8: bool = True,
               notes: list | None = None) -> dict:
    """Export a run's best-eval (or latest) checkpoint; see export_params."""
    from ..training.checkpoints import load_for_inference
    check_target(run_dir, out, force)
    cfg, params, _ = load_for_inference(run_dir, best=best, notes=notes)
    return export_params(params, cfg, Path(run_dir) / TOKENIZER_FILE, out, int8=int8)


# ----------------------------------------------------------------------------- running it
class OnnxGuppy:
    """An exported graph in onnxruntime (Python): logits, and greedy decoding both ways."""

    def __init__(self, path, cfg: ModelConfig):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        self.cfg = cfg
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def step(self, tokens_BT, past_k, past_v):
        """(logits_BTV, present_k, present_v) for tokens continuing the cached positions."""
        feed = {"tokens": np.asarray(tokens_BT, np.int64), "past_k": past_k, "past_v": past_v}
        return self.session.run(list(OUTPUTS), feed)

    def logits(self, tokens_BT) -> np.ndarray:
        """Logits of whole sequences (no past), as the model's plain forward."""
        past = empty_cache(self.cfg, len(tokens_BT))
        return self.step(tokens_BT, past, past)[0]

    def greedy_cached(self, prompt: list[int], max_new_tokens: int) -> list[int]:
        """Prefill once, then one position per new token; stops after eos or a full context."""
        past = empty_cache(self.cfg)
        logits, past_k, past_v = self.step([prompt], past, past)
        out = []
        while True:
            out.append(int(np.argmax(logits[0, -1])))
            if out[-1] == self.cfg.eos_id or len(out) == max_new_tokens \
                    or len(prompt) + len(out) >= self.cfg.max_seq_len:
                return out
            logits, past_k, past_v = self.step([[out[-1]]], past_k, past_v)

    def greedy_prefill(self, prompt: list[int], max_new_tokens: int) -> list[int]:
        """Re-run the whole sequence for every new token (the original's way), no cache kept."""
        ids = list(prompt)
        while len(ids) - len(prompt) < max_new_tokens and len(ids) < self.cfg.max_seq_len:
            ids.append(int(np.argmax(self.logits([ids])[0, -1])))
            if ids[-1] == self.cfg.eos_id:
                break
        return ids[len(prompt):]
