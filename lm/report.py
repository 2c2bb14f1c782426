"""What a person looks at after a run: a loss-curve PNG and a markdown report."""
from __future__ import annotations

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
