"""The original GuppyLM training recipe in PyTorch: AdamW, grad-norm clip, warmup + cosine,
in float32 or, as the original trains on a GPU, with float16 autocast and a GradScaler."""
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


def train_step_amp(model: GuppyLM, opt, sched, scaler, batch: dict, grad_clip: float = 1.0,
                   device_type: str = "cpu", dtype=torch.float16) -> float:
    """The original's mixed-precision step: the loss under float16 autocast, backward on the
    scaled loss, unscale, clip, step (skipped by the scaler when a gradient is inf/NaN),
    update the scale. The schedule advances either way; AdamW's own step count does not.
    (With dtype bfloat16, pass a disabled scaler: bfloat16 has float32's range.)"""
    model.train()
    with torch.autocast(device_type, dtype=dtype):
        loss = lm_loss(model(batch["inputs"]), batch["targets"], batch["loss_mask"])
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(opt)
    scaler.update()
    sched.step()
    return loss.item()


def to_torch_batch(batch: dict) -> dict:
    """A numpy batch (as guppy_jax.data makes) -> the tensors train_step takes."""
    return {"inputs": torch.from_numpy(np.asarray(batch["inputs"], dtype=np.int64)),
            "targets": torch.from_numpy(np.asarray(batch["targets"], dtype=np.int64)),
            "loss_mask": torch.from_numpy(np.asarray(batch["loss_mask"], dtype=bool))}
