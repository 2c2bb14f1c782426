"""Metric sinks for a run: metrics.jsonl and TensorBoard events in the workdir (process 0 only)."""
from __future__ import annotations

import json
import math
import os

import jax

from lm.stage_outputs import read_jsonl


class MetricWriter:
  def __init__(self, workdir: str):
    self.active = jax.process_index() == 0
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.file = open(self.path, "a")
    from tensorboardX import SummaryWriter
    self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: dict) -> None:
    if not self.active:
      return
    row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    # Strict JSON: a non-finite value (a diverged loss) is written as null.
    strict = {k: v if math.isfinite(v) else None for k, v in row.items()}
    self.file.write(json.dumps(strict, allow_nan=False) + "\n")
    self.file.flush()
    for k, v in row.items():
      if k != "step":
        self.tb.add_scalar(k, v, step)

  def text(self, step: int, tag: str, text: str) -> None:
    if self.active:
      self.tb.add_text(tag, text, step)

  def close(self) -> None:
    if self.active:
      self.file.close()
      self.tb.close()


def read_metrics(workdir: str) -> list[dict]:
  """Every record of <workdir>/metrics.jsonl ([] when there is none; a torn last line, left by a run
  killed mid-write, is skipped)."""
  return read_jsonl(os.path.join(workdir, "metrics.jsonl"))
