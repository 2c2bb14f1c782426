"""Over-optimisation across RLHF runs (seeds): one table, one plot.

  python -m experiments.rlhf_report --runs=runs/rlhf/seed=0,runs/rlhf/seed=1,runs/rlhf/seed=2 --out=runs/rlhf

Reads each run's metrics.jsonl and best_of_n.json (experiments.grpo with
configs/rlhf.py) and writes <out>/overoptimisation.md and overoptimisation_seeds.png:
per run the steps the two early-stopping rules choose (both from the second
reward model, no gold labels: its agreement with the first, its peak) and the
gold reward there, the best gold reward and its step, the gold at the start and
the end, and the Gao et al. fits (α, β) for RL and best-of-n; then their means.
"""
from __future__ import annotations

import json
import os

import numpy as np
from absl import flags

from lm import cli, rlhf
from lm.errors import UserError

_RUNS = flags.DEFINE_string("runs", None, "Comma-separated RLHF workdirs.")
_OUT = flags.DEFINE_string("out", None, "Folder for overoptimisation.md and the PNG.")


def load(workdir: str) -> dict:
  rows = rlhf.curve_rows(workdir)
  if not rows:
    raise UserError(f"--runs: {workdir!r} has no RLHF evaluations (eval/proxy, eval/kl_reply) in metrics.jsonl")
  bon_path = os.path.join(workdir, rlhf.BON_FILE)
  bon = json.load(open(bon_path)) if os.path.exists(bon_path) else None
  cfg_path = os.path.join(workdir, "config.json")
  if not os.path.exists(cfg_path):
    raise UserError(f"--runs: {workdir!r} has no config.json (not an experiments.grpo workdir?)")
  with open(cfg_path) as f:
    reward = json.load(f)["reward"]
  a = rlhf.analyse(rows, bon, reward["stop_patience"], reward["stop_drop"])
  for key, what in (("raw_gold", "gold scores (config.reward.gold=True)"),
                    ("stop", "a second reward model (config.reward.stop_workdir)"),
                    ("astop", "the two reward models' agreement at every evaluation (eval/rm_agreement)")):
    if key not in a:
      raise UserError(f"--runs: {workdir!r} has no {what}; the table needs it in every run")
  return a


def table(runs: dict[str, dict]) -> list[str]:
  lines = ["| run | agreement rule: step, gold | peak rule: step, gold | best gold (step) | gold at end | "
           "gold at start | RL α, β | best-of-n α, β |", "|---|---|---|---|---|---|---|---|"]
  picks = []
  for name, a in runs.items():
    steps, g = a["steps"], a["raw_gold"]
    i, k, j = steps.index(a["astop"]), steps.index(a["stop"]), steps.index(a["gold_best_step"])
    picks.append((g[i], g[k], g[j], g[-1], g[0]))
    fit = lambda key: "{:.3f}, {:.3f}".format(*a["fits"][key]) if key in a["fits"] else "–"
    lines.append(f"| {name} | {a['astop']}, {g[i]:.3f} | {a['stop']}, {g[k]:.3f} | {g[j]:.3f} ({a['gold_best_step']}) "
                 f"| {g[-1]:.3f} | {g[0]:.3f} | {fit('rl')} | {fit('bon')} |")
  m = np.array(picks)
  mean, std = m.mean(0), m.std(0)
  cells = [f"{x:.3f} ± {y:.3f}" for x, y in zip(mean, std)]
  lines.append(f"| mean ± std | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | {cells[4]} | | |")
  return lines


def plot(runs: dict[str, dict], path: str) -> str:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
  for c, (name, a) in zip(plt.cm.tab10.colors, runs.items()):
    for ax, key in zip(axes, ("proxy", "gold")):
      ax.plot(a["d"], a[key], "o-", color=c, ms=3, label=f"{name} RL")
      if "bon" in a:
        ax.plot(np.sqrt(a["bon"]["kl"]), a["bon"][key], "--", color=c, alpha=0.7, label=f"{name} best-of-n")
      if key == "gold" and "astop" in a:
        i = a["steps"].index(a["astop"])
        ax.plot([a["d"][i]], [a["gold"][i]], "*", color=c, ms=12)
  for ax, title in zip(axes, ("proxy (training reward model)", "gold (hidden labeller); ★ agreement stopping rule")):
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("√KL from the start (nats per reply)")
    ax.grid(alpha=0.3)
  axes[0].set_ylabel("gain over the start (start's per-sample std)")
  axes[1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def main() -> None:
  if not _RUNS.value or not _OUT.value:
    raise UserError("--runs and --out are required")
  names = [r for r in _RUNS.value.split(",") if r]
  labels = [os.path.basename(os.path.normpath(r)) for r in names]
  if len(set(labels)) < len(labels):  # rows are named by folder: seed=0, seed=1, ...
    raise UserError(f"--runs: two runs share a folder name ({', '.join(labels)}); give folders distinct names")
  runs = dict(zip(labels, map(load, names)))
  os.makedirs(_OUT.value, exist_ok=True)
  png = plot(runs, os.path.join(_OUT.value, "overoptimisation_seeds.png"))
  lines = ["# RLHF over-optimisation across runs", "",
           "Gold is the hidden labeller's mean score on held-out samples. Both stopping rules use a second reward "
           "model (other rankings) and no gold labels: the agreement rule stops before the correlation of the two "
           "models' scores on the policy's samples falls `reward.stop_drop` below its start; the peak rule at the "
           "second model's best mean score (patience `reward.stop_patience`). Fits are of the gold gain "
           "(standardised) against d = √KL: RL d(α − β log d), best-of-n d(α − β d).", "", *table(runs), "",
           f"![proxy and gold against √KL]({os.path.basename(png)})"]
  path = os.path.join(_OUT.value, "overoptimisation.md")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(table(runs)))
  print(f"→ {path}")


if __name__ == "__main__":
  cli.run(lambda: None, lambda _: main(), required=())
