"""The loss-curve picture of a run (matplotlib, no display needed).

Each picture is a `matplotlib.figure.Figure` drawn straight to a PNG, without pyplot: no
backend is chosen or switched, so a notebook that calls these keeps showing its own plots."""
from __future__ import annotations

import json
from pathlib import Path


def plot_losses(metrics_path, png_path) -> Path | None:
    """Train loss (raw and smoothed) and eval loss against the step, from metrics.jsonl."""
    from matplotlib.figure import Figure

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
    fig = Figure(figsize=(7, 4), dpi=110)
    ax = fig.subplots()
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
    return Path(png_path)


def plot_attention(maps_LHTT, labels: list[str], png_path, title: str) -> Path:
    """Every layer's (rows) and every head's (columns) attention map, keys across and
    queries down, with the tokens as axis labels on the outer panels."""
    from matplotlib.figure import Figure

    L, H, T, _ = maps_LHTT.shape
    side = 1.2 + 0.16 * T
    fig = Figure(figsize=(side * H + 1.0, side * L + 0.8), dpi=90, layout="constrained")
    axes = fig.subplots(L, H, squeeze=False)
    font = max(4, min(9, 160 // max(T, 1)))
    for layer in range(L):
        for head in range(H):
            ax = axes[layer, head]
            image = ax.imshow(maps_LHTT[layer, head], cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_xticks(range(T))
            ax.set_yticks(range(T))
            ax.set_xticklabels(labels if layer == L - 1 else [], rotation=90, fontsize=font)
            ax.set_yticklabels(labels if head == 0 else [], fontsize=font)
            ax.set_title(f"layer {layer} head {head}", fontsize=9)
    fig.colorbar(image, ax=axes, shrink=0.5, label="attention probability (query row, key column)")
    fig.suptitle(title, fontsize=11)
    fig.savefig(png_path)
    return Path(png_path)
