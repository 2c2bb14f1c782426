"""Reward over-optimisation, measured (Gao, Schulman & Hilton 2022): best-of-n, the fitted forms, early stopping.

With d = √KL(π ‖ π_start) (nats per reply), the gold reward gained over the
starting policy follows, in their fits,

  best-of-n   R(d) = d (α − β d)            KL of best-of-n: log n − (n − 1)/n
  RL          R(d) = d (α − β log d)

and the proxy (the reward model optimised against) keeps rising. `best_of_n`
computes the exact expected proxy and gold of best-of-n for every n ≤ m from m
samples per prompt (no resampling noise: the chance that the sample of proxy
rank i is the best of a random n-subset is C(i−1, n−1)/C(m, n)). `fit_bon` and
`fit_rl` are least squares in α, β (both forms are linear in them). Two stopping
rules that need no gold labels, both from a second reward model trained on other
rankings: `early_stop` follows its score and stops once it has not improved for
`patience` evaluations, keeping the step where it peaked; `agreement_stop` watches
the correlation of the two reward models' scores on the policy's own samples and
keeps the last step before it falls more than `drop` below its start (the policy
exploiting one model's quirks makes them disagree).
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import numpy as np


def bon_kl(n: int | np.ndarray) -> np.ndarray:
  """KL(best-of-n ‖ policy) = log n − (n − 1)/n (nats; 0 at n = 1)."""
  n = np.asarray(n, np.float64)
  return np.log(n) - (n - 1) / n


def best_of_n(proxy_PM: np.ndarray, gold_PM: np.ndarray, ns: Sequence[int]) -> dict[str, np.ndarray]:
  """Expected proxy and gold of the proxy's best of n samples, for each n, averaged over prompts.

  proxy_PM, gold_PM: scores of m samples for each of P prompts. Among equal proxy
  scores the earlier sample counts as the better (as `max` picks it).
  """
  proxy_PM, gold_PM = np.asarray(proxy_PM, np.float64), np.asarray(gold_PM, np.float64)
  P, m = proxy_PM.shape
  # Ascending (rank i, 1-based, at position i − 1); equal scores put the earlier sample higher.
  order = np.lexsort((np.broadcast_to(-np.arange(m), proxy_PM.shape), proxy_PM), axis=1)
  proxy_sorted = np.take_along_axis(proxy_PM, order, axis=1)
  gold_sorted = np.take_along_axis(gold_PM, order, axis=1)
  out = {"n": np.asarray(ns), "kl": bon_kl(ns), "proxy": [], "gold": []}
  for n in ns:
    if not 1 <= n <= m:
      raise ValueError(f"best-of-{n} needs 1 ≤ n ≤ {m} samples per prompt")
    w = np.array([math.comb(i - 1, n - 1) for i in range(1, m + 1)], np.float64) / math.comb(m, n)
    out["proxy"].append(float((proxy_sorted @ w).mean()))
    out["gold"].append(float((gold_sorted @ w).mean()))
  out["proxy"], out["gold"] = np.asarray(out["proxy"]), np.asarray(out["gold"])
  return out


def _lstsq(features_NK: np.ndarray, r_N: np.ndarray) -> tuple[float, float]:
  coef, *_ = np.linalg.lstsq(features_NK, r_N, rcond=None)
  return float(coef[0]), float(coef[1])


def fit_bon(d: np.ndarray, r: np.ndarray) -> tuple[float, float]:
  """(α, β) of R(d) = d(α − βd) by least squares; r is the gain over d = 0."""
  d, r = np.asarray(d, np.float64), np.asarray(r, np.float64)
  return _lstsq(np.stack([d, -d * d], 1), r)


def fit_rl(d: np.ndarray, r: np.ndarray) -> tuple[float, float]:
  """(α, β) of R(d) = d(α − β log d) by least squares (points at d = 0 carry no information)."""
  d, r = np.asarray(d, np.float64), np.asarray(r, np.float64)
  keep = d > 0
  d, r = d[keep], r[keep]
  return _lstsq(np.stack([d, -d * np.log(d)], 1), r)


def bon_form(d, alpha: float, beta: float) -> np.ndarray:
  d = np.asarray(d, np.float64)
  return d * (alpha - beta * d)


def rl_form(d, alpha: float, beta: float) -> np.ndarray:
  d = np.asarray(d, np.float64)
  return d * (alpha - beta * np.log(np.where(d > 0, d, 1.0)))


def early_stop(steps: Sequence[int], scores: Sequence[float], patience: int) -> tuple[int, int | None]:
  """(chosen step, step at which the rule fired or None): the step of the best score so far once
  `patience` later evaluations in a row have not beaten it; the best step seen when it never fires."""
  if not steps:
    raise ValueError("early_stop needs at least one evaluation")
  best_i, waited = 0, 0
  for i in range(1, len(steps)):
    if scores[i] > scores[best_i]:
      best_i, waited = i, 0
    else:
      waited += 1
      if waited >= patience:
        return int(steps[best_i]), int(steps[i])
  return int(steps[best_i]), None


def agreement_stop(steps: Sequence[int], agreement: Sequence[float], drop: float) -> tuple[int, int | None]:
  """(chosen step, step at which the rule fired or None): the evaluation before the first whose
  agreement is below agreement[0] − drop; the last step when that never happens."""
  if not steps:
    raise ValueError("agreement_stop needs at least one evaluation")
  for i in range(1, len(steps)):
    if agreement[i] < agreement[0] - drop:
      return int(steps[i - 1]), int(steps[i])
  return int(steps[-1]), None


def plot(path: str, rl: dict, bon: dict | None, fits: dict, title: str = "") -> str | None:
  """Proxy and gold (gain over the start) against √KL for RL and best-of-n on the same axes → PNG."""
  try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
  except ImportError:
    return None
  fig, ax = plt.subplots(figsize=(7, 4.5))
  d_rl = np.sqrt(np.maximum(rl["kl"], 0))
  ax.plot(d_rl, rl["proxy"], "o-", color="tab:blue", label="RL: proxy (reward model)")
  ax.plot(d_rl, rl["gold"], "s-", color="tab:orange", label="RL: gold")
  if "proxy2" in rl:
    ax.plot(d_rl, rl["proxy2"], "^:", color="tab:green", label="RL: second reward model (stopping rule)")
  if bon is not None:
    d_b = np.sqrt(bon["kl"])
    ax.plot(d_b, bon["proxy"], "--", color="tab:blue", alpha=0.6, label="best-of-n: proxy")
    ax.plot(d_b, bon["gold"], "--", color="tab:orange", alpha=0.6, label="best-of-n: gold")
  grid = np.linspace(0, max(d_rl.max(initial=0), np.sqrt(bon["kl"]).max() if bon is not None else 0) * 1.05, 100)
  if "rl" in fits:
    ax.plot(grid, rl_form(grid, *fits["rl"]), color="tab:red", lw=0.8,
            label=f"RL gold fit α={fits['rl'][0]:.2f} β={fits['rl'][1]:.2f}")
  if "bon" in fits:
    ax.plot(grid, bon_form(grid, *fits["bon"]), color="tab:purple", lw=0.8,
            label=f"BoN gold fit α={fits['bon'][0]:.2f} β={fits['bon'][1]:.2f}")
  for step in fits.get("marks", ()):
    ax.axvline(step[1], color="grey", lw=0.6, ls=":")
    ax.text(step[1], ax.get_ylim()[1], step[0], fontsize=7, rotation=90, va="top")
  ax.set_xlabel("√KL from the starting policy (nats per reply)")
  ax.set_ylabel("reward gain over the start (standardised)")
  ax.set_title(title or "reward over-optimisation")
  ax.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
