"""What a person looks at after a run: a loss-curve PNG and a markdown report."""
from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lm.metrics import read_metrics  # noqa: E402


def loss_curve(workdir: str, filename: str = "loss.png") -> str | None:
  rows = read_metrics(workdir)
  train = [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
  val = [(r["step"], r["val/loss"]) for r in rows if "val/loss" in r]
  if not train:
    return None
  fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
  ax.plot(*zip(*train), label="train", lw=1.2)
  if val:
    ax.plot(*zip(*val), "o-", label="validation", lw=1.5)
  ax.set_xlabel("step")
  ax.set_ylabel("loss (nats/token)")
  ax.set_title(os.path.basename(os.path.abspath(workdir)))
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  path = os.path.join(workdir, filename)
  fig.savefig(path)
  plt.close(fig)
  return path


def curves(workdir: str, panels, filename: str) -> str | None:
  """One PNG of metrics.jsonl curves against step: `panels` = [(title, (metric keys, ...))]."""
  rows = read_metrics(workdir)
  panels = [(t, [k for k in keys if any(k in r for r in rows)]) for t, keys in panels]
  panels = [(t, keys) for t, keys in panels if keys]
  if not panels:
    return None
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), dpi=110, squeeze=False)
  for ax, (title, keys) in zip(axes[0], panels):
    for k in keys:
      pts = [(r["step"], r[k]) for r in rows if k in r and r[k] == r[k]]
      if pts:
        ax.plot(*zip(*pts), "o-" if len(pts) < 30 else "-", ms=3, lw=1.2, label=k)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  path = os.path.join(workdir, filename)
  fig.savefig(path)
  plt.close(fig)
  return path


def write_report(workdir: str, title: str, summary: dict, samples: list[tuple[str, str]],
                 plot: str | None, extra: str = "") -> str:
  """report.md: the summary table, the loss curve, stage-specific sections (`extra`), samples."""
  lines = [f"# {title}", "", "| metric | value |", "|---|---|"]
  for k, v in summary.items():
    lines.append(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")
  if plot:
    lines += ["", f"![loss curve]({os.path.basename(plot)})"]
  if extra:
    lines += ["", extra.rstrip()]
  if samples:
    lines += ["", "## Samples at the last evaluation", ""]
    for prompt, text in samples:
      lines += [f"**{prompt!r}** →", "", "```", prompt + text, "```", ""]
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


def write_seed_table(runs: list[str], stem: str, title: str, about: str, lines: list[str], summary: dict) -> str:
  """<stem>.md (title, `about`, the table `lines`) and <stem>.json (`summary`) beside the runs (the folder of
  the first); the table is printed too. An experiment's --collect over seeds."""
  out = os.path.dirname(os.path.abspath(runs[0]))
  with open(os.path.join(out, f"{stem}.md"), "w") as f:
    f.write("\n".join([f"# {title}", "", about, ""] + lines) + "\n")
  with open(os.path.join(out, f"{stem}.json"), "w") as f:
    json.dump(summary, f, indent=1)
  print("\n".join(lines) + f"\n→ {os.path.join(out, stem + '.md')}", flush=True)
  return out
