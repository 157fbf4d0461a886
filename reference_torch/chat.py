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
import json
import sys
from pathlib import Path

import torch

from guppy_jax.core.config import ModelConfig
from guppy_jax.core.tokenizer import decode, encode, format_prompt, load_tokenizer
from reference_torch.model import GuppyLM, generate, generate_cached


def read_state_dict(model_dir: Path) -> dict:
    """The export's tensors: model.safetensors, else pytorch_model.bin (read weights-only)."""
    if (model_dir / "model.safetensors").exists():
        from safetensors.torch import load_file
        return load_file(str(model_dir / "model.safetensors"))
    return torch.load(model_dir / "pytorch_model.bin", map_location="cpu", weights_only=True)


def load_export(model_dir: Path) -> tuple[GuppyLM, ModelConfig]:
    """reference_torch's GuppyLM from an export (`guppy_jax.convert export` writes the
    original's keys and a flat config.json), loaded strictly."""
    cfg = ModelConfig.from_dict(json.loads((model_dir / "config.json").read_text()))
    state = read_state_dict(model_dir)
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
    except Exception as err:  # a damaged export: torch, safetensors and json raise many types
        print(f"error: {model_dir}: the export cannot be loaded ({type(err).__name__}: "
              f"{str(err).strip().splitlines()[0][:200] if str(err).strip() else 'no detail'}); export it again",
              file=sys.stderr)
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
