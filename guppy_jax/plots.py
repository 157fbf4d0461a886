"""The loss-curve picture of a run (matplotlib, no display needed)."""
from __future__ import annotations

import json
from pathlib import Path


def plot_losses(metrics_path, png_path) -> Path | None:
    """Train loss (raw and smoothed) and eval loss against the step, from metrics.jsonl."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, evals = [], []
    for line in Path(metrics_path).read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:  # a line torn by a crash: skip it
            continue
        if "loss" in rec:
            train.append((rec["step"], rec["loss"]))
        if "eval_loss" in rec:
            evals.append((rec["step"], rec["eval_loss"]))
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    steps, values = zip(*train)
    ax.plot(steps, values, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (per step)")
    k = max(1, len(values) // 50)
    smooth = [sum(values[max(0, i - k + 1):i + 1]) / len(values[max(0, i - k + 1):i + 1])
              for i in range(len(values))]
    ax.plot(steps, smooth, color="tab:blue", label=f"train (mean of {k})")
    if evals:
        ax.plot(*zip(*evals), "o-", color="tab:orange", label="eval")
    ax.set(xlabel="step", ylabel="cross-entropy (nats/token)", title="GuppyLM training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
    return Path(png_path)
