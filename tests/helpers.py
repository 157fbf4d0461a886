"""Small readers the tests share: a run's logged metrics and weights, random model weights."""
import json
from pathlib import Path

import jax
import numpy as np


def metrics(run_dir, key: str = "loss") -> dict:
    """{step: value} of one key of a run's metrics.jsonl ("loss" per step, "eval_loss" per eval)."""
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows if key in r}


def losses(run_dir) -> dict:
    """{step: training loss} of a run."""
    return metrics(run_dir, "loss")


def run_weights(run_dir, best: bool = False) -> list:
    """The leaves of a run's weights as numpy arrays (its newest checkpoint, or best/)."""
    from guppy_jax.training.checkpoints import load_for_inference
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(load_for_inference(run_dir, best=best)[1])]


def random_params(cfg, seed: int, scale: float = 1.0):
    """Freshly initialised weights of `cfg`; `scale` multiplies every matrix (larger-than-init
    weights make greedy decoding wander instead of repeating one token)."""
    from guppy_jax.core.model import init_params
    params = init_params(cfg, jax.random.key(seed))
    return params if scale == 1.0 else jax.tree_util.tree_map(lambda x: x * scale if x.ndim == 2 else x, params)
