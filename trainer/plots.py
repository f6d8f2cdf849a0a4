"""Plots for people: training curves, convergence by negative type, Recall@K curves (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path


def plot_run(result: dict, path: Path) -> None:
    """One run's curves: mean training loss and validation nDCG@10 / Recall@100 against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = result["history"]
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(10, 4))
    trained = [p for p in points if p["loss"] is not None]
    loss_ax.plot([p["step"] for p in trained], [p["loss"] for p in trained], marker="o")
    loss_ax.set(xlabel="optimizer step", ylabel="mean training loss", title="loss")
    for metric in ("ndcg@10", "recall@100"):
        val_ax.plot([p["step"] for p in points], [p["metrics"][metric] for p in points], marker="o", label=metric)
    val_ax.axvline(result["best_step"], color="grey", linestyle="--", label="best (kept)")
    val_ax.set(xlabel="optimizer step", title="validation (sampled corpus)")
    val_ax.legend()
    for ax in (loss_ax, val_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_convergence(results: dict, arms: tuple[str, ...], path: Path) -> None:
    """In-training validation nDCG@10 against steps and against training seconds (mining included)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(10, 4))
    for name in (*arms, "tb-hns + fn mask + roar"):
        arm = results.get("arms", {}).get(name)
        if not arm:
            continue
        ndcg = [p["metrics"]["ndcg@10"] for p in arm["history"]]
        by_step.plot([p["step"] for p in arm["history"]], ndcg, marker="o", label=name)
        by_time.plot([p["train_seconds"] for p in arm["history"]], ndcg, marker="o", label=name)
    by_step.set(xlabel="optimizer step", ylabel="val nDCG@10 (sampled corpus)", title="against steps")
    by_time.set(xlabel="training seconds (steps + mining)", title="against wall-clock")
    for ax in (by_step, by_time):
        ax.grid(alpha=0.3)
    by_step.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_recall_curves(results: dict[str, dict], path: Path) -> None:
    """Recall@K against K (log scale) per model, from each result's ``recall_curve``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name, metrics in results.items():
        curve = metrics["recall_curve"]
        ax.plot(range(1, len(curve) + 1), curve, label=name)
    ax.set(xlabel="K", ylabel="Recall@K", title="Home Depot: Recall@K (relevance >= 2.5)", xscale="log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
