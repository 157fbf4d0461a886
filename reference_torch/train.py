"""The original GuppyLM training recipe in PyTorch: AdamW, grad-norm clip, warmup + cosine."""
from __future__ import annotations

import numpy as np
import torch

from guppy_jax.config import OptimConfig
from guppy_jax.schedule import warmup_cosine

from .model import GuppyLM, lm_loss


def make_optimizer(model: GuppyLM, oc: OptimConfig):
    """AdamW on every parameter (weight decay included) and a LambdaLR with the shared schedule."""
    opt = torch.optim.AdamW(model.parameters(), lr=oc.lr, betas=(oc.beta1, oc.beta2), eps=oc.eps,
                            weight_decay=oc.weight_decay)

    def factor(step):
        return float(warmup_cosine(step, peak=oc.lr, floor=oc.min_lr, warmup=oc.warmup_steps,
                                   total=oc.steps)) / oc.lr

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def train_step(model: GuppyLM, opt, sched, batch: dict, grad_clip: float = 1.0) -> float:
    """One update on a batch of (B, T) tensors `inputs`, `targets`, `loss_mask`; returns the loss."""
    model.train()
    loss = lm_loss(model(batch["inputs"]), batch["targets"], batch["loss_mask"])
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    sched.step()
    return loss.item()


def to_torch_batch(batch: dict) -> dict:
    """A numpy batch (as guppy_jax.data makes) -> the tensors train_step takes."""
    return {"inputs": torch.from_numpy(np.asarray(batch["inputs"], dtype=np.int64)),
            "targets": torch.from_numpy(np.asarray(batch["targets"], dtype=np.int64)),
            "loss_mask": torch.from_numpy(np.asarray(batch["loss_mask"], dtype=bool))}
