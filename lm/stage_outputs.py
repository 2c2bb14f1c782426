"""Reading what a stage wrote: its JSON and JSONL files, metrics.jsonl as series, report.md samples.

Tolerant by design (the pipeline's report card reads stages that may be half-way): a missing
file is empty, a torn last line (a run killed mid-write) is skipped. `read_jsonl` is also what
`lm.metrics.read_metrics` reads with (this module stays free of JAX: the pipeline process imports it).
`write_json` is the atomic writer of such files.
"""
from __future__ import annotations

import json
import math
import os
import re
import statistics


def read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def write_json(path: str, record) -> None:
  """`record` as JSON at `path`, all or nothing (a temporary file, synced, then renamed): what a reader
  finds is the old file or the new one, never half of one."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(record, f, indent=1)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def read_jsonl(path: str) -> list[dict]:
  """Every parsable line (a run killed mid-write leaves a torn last line: skipped)."""
  out = []
  try:
    with open(path) as f:
      for line in f:
        try:
          out.append(json.loads(line))
        except ValueError:
          continue
  except OSError:
    pass
  return [r for r in out if isinstance(r, dict)]


def metrics(stage_dir: str) -> list[dict]:
  return [r for r in read_jsonl(os.path.join(stage_dir, "metrics.jsonl")) if "step" in r]


def series(rows: list[dict], key: str) -> list[tuple[int, float]]:
  """(step, value) of every row with a finite value for `key`; the last row per step wins (a resume
  may repeat a step's evaluation)."""
  by_step = {}
  for r in rows:
    v = r.get(key)
    if isinstance(v, (int, float)) and math.isfinite(v):
      by_step[r["step"]] = float(v)
  return sorted(by_step.items())


def first_last(rows: list[dict], key: str) -> tuple[float | None, float | None]:
  s = series(rows, key)
  return (s[0][1], s[-1][1]) if s else (None, None)


def median(rows: list[dict], key: str) -> float | None:
  values = [v for _, v in series(rows, key)]
  return statistics.median(values) if values else None


def report_samples(stage_dir: str, limit: int = 1) -> list[str]:
  """The first sample(s) of a stage's report.md "Samples at the last evaluation"."""
  try:
    with open(os.path.join(stage_dir, "report.md")) as f:
      text = f.read()
  except OSError:
    return []
  part = text.split("## Samples at the last evaluation", 1)
  blocks = re.findall(r"```\n(.*?)\n```", part[1], re.S) if len(part) == 2 else []
  return blocks[:limit]


def eval_rows(path: str, per_task: int = 1) -> list[dict]:
  """The first `per_task` graded replies of each task in an eval.jsonl."""
  rows, seen = [], {}
  for r in read_jsonl(path):
    task = r.get("task", "")
    if seen.get(task, 0) < per_task:
      seen[task] = seen.get(task, 0) + 1
      rows.append(r)
  return rows


def rankings_stats(path: str) -> tuple[int, int, float | None]:
  """(rankings, ordered pairs with different gold scores, mean gold score) of a rankings JSONL."""
  rankings = read_jsonl(path)
  pairs = sum(sum(1 for i in range(len(g)) for j in range(i + 1, len(g)) if g[i] != g[j])
              for g in (r.get("gold") or [] for r in rankings))
  golds = [x for r in rankings for x in (r.get("gold") or [])]
  return len(rankings), pairs, (sum(golds) / len(golds) if golds else None)


def refusal_before_after(stage_dir: str) -> tuple[dict, dict]:
  """An experiments.refusal run's "before" (the probed model on the held-out facts, refusal/before.json)
  and its last evaluation after training (step 0 is the base model, not the "before"); {} where not
  written yet."""
  before = read_json(os.path.join(stage_dir, "refusal", "before.json")) or {}
  evals = [r for r in metrics(stage_dir) if r.get("step", 0) > 0 and any(k.startswith("eval/") for k in r)]
  return before, (evals[-1] if evals else {})
