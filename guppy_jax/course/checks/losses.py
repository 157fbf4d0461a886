"""Chapter 4's exercise: the masked cross-entropy, checked against PyTorch's."""
from __future__ import annotations

import numpy as np

from .. import Wrong


def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    logits_BTV = rng.normal(size=(3, 7, 11)).astype(np.float32) * 3
    targets_BT = rng.integers(0, 11, size=(3, 7))
    mask_BT = rng.random((3, 7)) < 0.6
    mask_BT[2] = False  # one row with nothing to predict
    return logits_BTV, targets_BT, mask_BT


def masked_cross_entropy(fn) -> str:
    import torch
    import torch.nn.functional as F

    logits_BTV, targets_BT, mask_BT = _inputs()
    got = float(np.asarray(fn(logits_BTV, targets_BT, mask_BT)))
    ce_BT = F.cross_entropy(torch.from_numpy(logits_BTV).transpose(1, 2), torch.from_numpy(targets_BT),
                            reduction="none")
    want = float((ce_BT * torch.from_numpy(mask_BT)).sum() / torch.from_numpy(mask_BT).sum())
    if abs(got - want) > 1e-5 * max(1.0, abs(want)):
        everything = float(ce_BT.mean())
        hint = (" That is the mean over every position: leave out the ones where mask_BT is False."
                if abs(got - everything) < 1e-5 * max(1.0, abs(everything)) else "")
        raise Wrong(f"The loss is {got:.6f}, PyTorch's masked mean is {want:.6f}.{hint}")
    nothing = float(np.asarray(fn(logits_BTV, targets_BT, np.zeros_like(mask_BT))))
    if not np.isfinite(nothing) or nothing != 0.0:
        raise Wrong(f"With every position masked out the loss is {nothing}, not 0: divide by at least 1.")
    return f"{got:.6f} against PyTorch's {want:.6f}, and 0 when nothing is kept."


CHECKS = {"masked_cross_entropy": masked_cross_entropy}
