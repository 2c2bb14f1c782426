"""Metric sinks for a run: metrics.jsonl and TensorBoard events in the workdir (process 0 only)."""
from __future__ import annotations

import json
import math
import os
import sys

import jax

from lm.stage_outputs import read_jsonl


def _summary_writer(logdir: str):
  """tensorboardX's writer, imported without PyTorch: tensorboardX imports torch only to accept its
  tensors when it is installed (as it is with the tests' extras), which costs every stage 1.5-4 s
  and a few hundred MB at start-up."""
  if "torch" in sys.modules:
    from tensorboardX import SummaryWriter
  else:
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX expects
    try:
      from tensorboardX import SummaryWriter
    finally:
      del sys.modules["torch"]
  return SummaryWriter(logdir)


class MetricWriter:
  def __init__(self, workdir: str):
    self.active = jax.process_index() == 0
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.file = open(self.path, "a")
    self.tb = _summary_writer(os.path.join(workdir, "tensorboard"))

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
