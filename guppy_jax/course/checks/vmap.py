"""Chapter 4a's exercise: a one-example loss, vmapped into per-example losses."""
from __future__ import annotations

import numpy as np

from .. import Wrong


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    B, T, D, V = 5, 6, 8, 11
    W_DV = rng.normal(size=(D, V)).astype(np.float32)
    x_BTD = rng.normal(size=(B, T, D)).astype(np.float32)
    targets_BT = rng.integers(0, V, size=(B, T))
    mask_BT = rng.random((B, T)) < 0.6
    mask_BT[0] = True
    mask_BT[3] = False  # an example with nothing to predict
    return W_DV, x_BTD, targets_BT, mask_BT


def per_example_losses(fn) -> str:
    import torch
    import torch.nn.functional as F

    W_DV, x_BTD, targets_BT, mask_BT = _inputs()
    want = []
    for x_TD, t_T, m_T in zip(x_BTD, targets_BT, mask_BT):  # the loop vmap replaces
        ce_T = F.cross_entropy(torch.from_numpy(x_TD) @ torch.from_numpy(W_DV), torch.from_numpy(t_T),
                               reduction="none")
        kept = torch.from_numpy(m_T)
        want.append(float((ce_T * kept).sum() / kept.sum().clamp(min=1)))
    want = np.array(want)
    try:
        got = np.asarray(fn(W_DV, x_BTD, targets_BT, mask_BT), np.float64)
    except ValueError as err:
        if "vmap" in str(err):
            raise Wrong("vmap could not split the arguments into 5 examples: W_DV is shared by every example, "
                        f"so give it in_axes None, and the other three 0.") from None
        raise
    if got.shape != want.shape:
        raise Wrong(f"The result has shape {got.shape}, not ({len(want)},): one loss per example. Is the "
                    "function applied to the whole batch at once rather than vmapped?")
    total = float(sum(w * m.sum() for w, m in zip(want, mask_BT)) / mask_BT.sum())
    if np.allclose(got, total, atol=1e-5):
        raise Wrong("Every example got the batch's loss: map over the examples with jax.vmap, so that each "
                    "call of loss_of_one sees one example.")
    if not np.all(np.isfinite(got)):
        raise Wrong(f"The losses are {np.round(got, 4).tolist()}: example 3 has no targets, and its loss must be 0, "
                    "not a division by zero. Use loss_of_one as given (it divides by at least 1).")
    if not np.allclose(got, want, rtol=1e-5, atol=1e-6):
        worst = int(np.argmax(np.abs(got - want)))
        raise Wrong(f"Example {worst}'s loss is {got[worst]:.6f}, a PyTorch loop gives {want[worst]:.6f}: call "
                    "loss_of_one unchanged, through jax.vmap(loss_of_one, in_axes=(None, 0, 0, 0)).")
    return f"{len(want)} losses match a PyTorch loop over the examples (the one with no targets: {got[3]})."


CHECKS = {"per_example_losses": per_example_losses}
