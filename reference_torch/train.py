"""The original GuppyLM training recipe in PyTorch: AdamW, grad-norm clip, warmup + cosine,
in float32 or, as the original trains on a GPU, with float16 autocast and a GradScaler."""
from __future__ import annotations

import numpy as np
import torch

from guppy_jax.core.config import OptimConfig
from guppy_jax.core.schedule import warmup_cosine

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
    """A numpy batch (as guppy_jax.data.batches makes) -> the tensors train_step takes."""
    return {"inputs": torch.from_numpy(np.asarray(batch["inputs"], dtype=np.int64)),
            "targets": torch.from_numpy(np.asarray(batch["targets"], dtype=np.int64)),
            "loss_mask": torch.from_numpy(np.asarray(batch["loss_mask"], dtype=bool))}


# ----------------------------------------------------------------------------- DistributedDataParallel
def ddp_train_step(ddp_model, opt, sched, batch: dict, grad_clip: float = 1.0, global_mean: bool = True) -> float:
    """One update on this rank's rows of the batch under DistributedDataParallel, which
    averages the ranks' gradients (sum / world size) during backward. Returns the loss of
    the whole global batch.

    The loss each rank differentiates decides what that average means. The natural
    `lm_loss` on this rank's rows (its own token mean) gives the mean of the ranks' means:
    the single-device loss only when every rank holds the same number of real tokens.
    With `global_mean`, each rank divides its sum by the global count of real tokens (one
    all-reduce) and scales by the world size, undoing DDP's division: the gradient of the
    single-device loss, exactly."""
    import torch.distributed as dist
    ddp_model.train()
    logits_BTV = ddp_model(batch["inputs"])
    ce_BT = torch.nn.functional.cross_entropy(logits_BTV.flatten(0, 1), batch["targets"].flatten(),
                                              reduction="none")
    mask = batch["loss_mask"].to(ce_BT.dtype).flatten()
    loss_sum, count = (ce_BT * mask).sum(), mask.sum()
    totals = torch.stack([loss_sum.detach(), count])
    dist.all_reduce(totals)
    if global_mean:
        loss = loss_sum * dist.get_world_size() / totals[1].clamp(min=1.0)
    else:
        loss = loss_sum / count.clamp(min=1.0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(ddp_model.parameters(), grad_clip)
    opt.step()
    sched.step()
    return float(totals[0] / totals[1].clamp(min=1.0))


def ddp_worker(rank: int, world: int, port: int, cfg, oc: OptimConfig, state_dict: dict, batches: list,
               global_mean: bool, results) -> None:
    """A rank of a gloo process group on this machine: trains a copy of `state_dict` on its
    block of rows of every batch; rank 0 puts (losses, final state dict) on `results`."""
    import os

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        model = GuppyLM(cfg)
        model.load_state_dict(state_dict)
        ddp_model = DistributedDataParallel(model)
        opt, sched = make_optimizer(model, oc)
        losses = []
        for batch in batches:
            rows = len(batch["inputs"]) // world
            mine = {k: v[rank * rows:(rank + 1) * rows] for k, v in to_torch_batch(batch).items()}
            losses.append(ddp_train_step(ddp_model, opt, sched, mine, oc.grad_clip, global_mean))
        if rank == 0:
            results.put((losses, {k: v.detach().clone().numpy() for k, v in model.state_dict().items()}))
        dist.barrier()  # no rank tears the group down while another still uses it
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_ddp(cfg, oc: OptimConfig, state_dict: dict, batches: list, world: int = 2, global_mean: bool = True):
    """(losses, final state dict) of `world` DDP ranks on CPU (gloo), started with spawn."""
    import torch.multiprocessing as mp
    ctx = mp.get_context("spawn")
    results, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=ddp_worker, args=(r, world, port, cfg, oc, state_dict, batches, global_mean, results))
             for r in range(world)]
    for p in procs:
        p.start()
    try:
        got = results.get(timeout=600)
    except Exception:
        got = None
    for p in procs:
        p.join(timeout=60)
    if got is None or any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"a DDP rank failed (exit codes {[p.exitcode for p in procs]})")
    return got
