"""``latentae plot RUN``: loss and validation curves of a run to one PNG."""

from __future__ import annotations

from pathlib import Path

from latentae.engine.monitor import read_metrics
from latentae.errors import InputError

LOSS_KEYS = ("loss", "l1", "perceptual", "wavelet", "highpass", "kl", "adversarial", "d_loss",
             "equivariance", "latent_scale_equivariance", "decoder_noise")


def plot_run(run: str | Path, out: str | Path | None = None) -> Path:
    """Draw the training losses (log scale) and validation metrics of ``run`` against
    the step; returns the PNG path (default ``RUN/curves.png``)."""
    import matplotlib  # deferred: optional, heavy
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run)
    train = [r for r in records if "loss" in r]
    val = [r for r in records if any(k.startswith("val_") for k in r)]
    if not train:
        raise InputError(f"{run}/metrics.jsonl has no training records yet")
    val_keys = sorted({k for r in val for k in r if k.startswith("val_")})
    fig, axes = plt.subplots(1, 1 + len(val_keys), figsize=(5 * (1 + len(val_keys)), 3.6))
    axes = axes if len(val_keys) else [axes]
    for key in LOSS_KEYS:
        pts = [(r["step"], r[key]) for r in train if key in r and r[key] > 0]
        if pts:
            axes[0].plot(*zip(*pts), label=key)
    axes[0].set(xlabel="step", ylabel="loss (weighted)", yscale="log", title="training")
    axes[0].legend(fontsize=7)
    for ax, key in zip(axes[1:], val_keys):
        pts = [(r["step"], r[key]) for r in val if key in r]
        ax.plot(*zip(*pts), marker="o")
        ax.set(xlabel="step", title=key)
    fig.tight_layout()
    out = Path(out) if out else Path(run) / "curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
