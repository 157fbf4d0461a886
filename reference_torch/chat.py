"""The reference's chat, the peer for start-up timing: `python -m reference_torch.chat`.

    python -m guppy_jax.convert export --run-dir runs/guppy --out exported/
    python -m reference_torch.chat --model-dir exported/ --prompt "hi guppy"

Loads an export (pytorch_model.bin or model.safetensors, config.json, tokenizer.json) into
reference_torch's GuppyLM and answers one message with the original's sampler, which runs
the whole sequence again for every token, or with the key/value cache (--cached). PyTorch
and tokenizers only: no JAX is imported.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from guppy_jax.config import ModelConfig
from guppy_jax.tokenizer import decode, encode, format_prompt, load_tokenizer
from guppy_jax.weight_files import FORMATS, WeightFileError, read_weights
from reference_torch.model import GuppyLM, generate, generate_cached


def load_export(model_dir: Path) -> tuple[GuppyLM, ModelConfig]:
    """reference_torch's GuppyLM from an export, read by guppy_jax.weight_files (which reads
    pickles weights-only and needs no JAX)."""
    path = next((model_dir / name for name in FORMATS.values() if (model_dir / name).exists()),
                model_dir / FORMATS["safetensors"])
    state, cfg, _ = read_weights(path)
    state = {key: torch.as_tensor(value) for key, value in state.items()}
    state.setdefault("lm_head.weight", state["tok_emb.weight"])  # tied: one tensor, two names
    model = GuppyLM(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval(), cfg


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m reference_torch.chat", description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", required=True, help="a directory written by guppy_jax.convert export")
    p.add_argument("--prompt", required=True)
    p.add_argument("--temperature", type=float, default=0.7, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cached", action="store_true", help="decode with the key/value cache")
    args = p.parse_args(argv)
    model_dir = Path(args.model_dir)
    if not (model_dir / "config.json").exists():
        print(f"error: {model_dir} holds no config.json: export a run first (python -m guppy_jax.convert "
              f"export --run-dir RUN --out {model_dir})", file=sys.stderr)
        return 2
    try:
        model, cfg = load_export(model_dir)
    except WeightFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    tok = load_tokenizer(model_dir / "tokenizer.json")
    ids = encode(tok, format_prompt(args.prompt))[-(cfg.max_seq_len - 1):]
    sampler = generate_cached if args.cached else generate
    out = sampler(model, ids, args.max_new_tokens, args.temperature, args.top_k, eos_id=cfg.eos_id,
                  generator=torch.Generator().manual_seed(args.seed))
    print(f"Guppy> {decode(tok, out).strip()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
