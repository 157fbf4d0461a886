"""Chapter 5's exercise: one Adam step by hand, against torch.optim.Adam."""
from __future__ import annotations

import numpy as np

from .. import Wrong


def adam_step(fn) -> str:
    import torch

    rng = np.random.default_rng(1)
    start = rng.normal(size=(5,)).astype(np.float32)
    grads = [rng.normal(size=(5,)).astype(np.float32) * scale for scale in (1.0, 1e-3, 10.0)]
    lr, b1, b2, eps = 1e-2, 0.9, 0.95, 1e-8
    weight = torch.nn.Parameter(torch.from_numpy(start.copy()))
    opt = torch.optim.Adam([weight], lr=lr, betas=(b1, b2), eps=eps)
    param, m, v = start, np.zeros(5, np.float32), np.zeros(5, np.float32)
    for t, g in enumerate(grads, start=1):
        weight.grad = torch.from_numpy(g.copy())
        opt.step()
        param, m, v = (np.asarray(a) for a in fn(param, g, m, v, t, lr, b1, b2, eps))
        want = weight.detach().numpy()
        if not np.allclose(param, want, rtol=1e-5, atol=1e-7):
            hint = (" Step 1 already differs: check the bias correction, m / (1 - b1**t) and "
                    "v / (1 - b2**t)." if t == 1 else " Check that m and v you return carry to the next step.")
            raise Wrong(f"After step {t} the parameter is {param[:3]}..., PyTorch's {want[:3]}....{hint}")
    return f"three steps agree with torch.optim.Adam (largest difference {np.abs(param - want).max():.1e})."


CHECKS = {"adam_step": adam_step}
