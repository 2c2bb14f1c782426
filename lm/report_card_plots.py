"""The report card's PNGs (lm/report_card.py), drawn from what the stages logged."""
from __future__ import annotations

import math
import os

from lm.stage_outputs import metrics, read_json, series


def _style(ax, xlabel: str) -> None:
  ax.set_xlabel(xlabel)
  ax.grid(alpha=0.3)
  if ax.get_legend_handles_labels()[0]:  # a panel whose stage has not run yet stays empty
    ax.legend(fontsize=8)


def draw(workdir: str) -> dict:
  """PNGs beside report.md, each only when its data exists: {name: file name}."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  made = {}

  def save(fig, name):
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, f"card_{name}.png"))
    plt.close(fig)
    made[name] = f"card_{name}.png"

  base = metrics(os.path.join(workdir, "base"))
  sfts = {n: metrics(os.path.join(workdir, n)) for n in ("sft", "sft_chat", "sft_arith")}
  if series(base, "train/loss") or any(series(m, "val/loss") for m in sfts.values()):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    for key, style in (("train/loss", "-"), ("val/loss", "o-")):
      if pts := series(base, key):
        axes[0].plot(*zip(*pts), style, ms=3, label=key)
    axes[0].set_title("base: loss (nats/token)")
    for n, m in sfts.items():
      if pts := series(m, "val/loss"):
        axes[1].plot(*zip(*pts), "o-", ms=3, label=n)
    axes[1].set_title("SFT: held-out assistant-token loss")
    axes[1].set_yscale("log")
    for ax in axes:
      _style(ax, "step")
    save(fig, "losses")

  g = metrics(os.path.join(workdir, "grpo"))
  if series(g, "eval/pass@1") or series(g, "rollout/response_tokens"):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    for key in ("eval/pass@1", "rollout/reward"):
      if pts := series(g, key):
        axes[0].plot(*zip(*pts), "o-" if key.startswith("eval") else "-", ms=3, lw=1, label=key)
    axes[0].set_title("GRPO: held-out pass@1, training reward")
    for key in ("rollout/response_tokens", "eval/length_correct", "eval/length_wrong"):
      if pts := series(g, key):
        axes[1].plot(*zip(*pts), "o-" if key.startswith("eval") else "-", ms=3, lw=1, label=key)
    axes[1].set_title("GRPO: reply length (tokens)")
    for ax in axes:
      _style(ax, "step")
    save(fig, "grpo")

  r = metrics(os.path.join(workdir, "rlhf"))
  pts = [(row["eval/kl_reply"], row.get("eval/proxy"), row.get("eval/gold")) for row in r
         if isinstance(row.get("eval/kl_reply"), (int, float))]
  bon = read_json(os.path.join(workdir, "rlhf", "best_of_n.json")) or {}
  if pts or bon.get("n"):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    for ax, idx, title in ((axes[0], 1, "proxy reward"), (axes[1], 2, "gold reward")):
      rl = [(math.sqrt(max(p[0], 0.0)), p[idx]) for p in pts if p[idx] is not None]
      if rl:
        ax.plot(*zip(*rl), "o-", ms=3, label="RLHF")
      key = "proxy" if idx == 1 else "gold"
      if bon.get("n") and bon.get(key):
        ax.plot([math.sqrt(k) for k in bon["kl"]], bon[key], "s--", ms=3, label="best-of-n")
      ax.set_title(f"RLHF: {title} against √KL per reply")
      _style(ax, "√KL")
    save(fig, "rlhf")
  return made
