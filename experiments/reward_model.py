"""Reward model: python -m experiments.reward_model --config=configs/reward_model.py:tiny --workdir=runs/rm \\
    --config.init_from.workdir=runs/sft

Starts from an earlier stage (`init_from`: a base or SFT workdir, or a Hugging
Face folder; the source's model config and tokenizer) with the LM head replaced
by a fresh scalar head (lm/reward_model.py), reads human rankings (HH pairs,
OpenAssistant ranked groups, or ranked JSONL: lm/data/rankings.py), renders
each response with its prompt in the one conversation format, packs whole
rankings into microbatches (lm/data/ranking_rows.py) and trains on the shared
loop with the Bradley–Terry loss over every pair of every ranking
(lm.losses.ranking). Every evaluation scores the whole held-out split:
pairwise accuracy (chance 0.5), mean margin between the better and the worse
reply, loss, and how often the best-ranked reply scores highest (chance: about
1/k). report.md gets those at the start and the end, the data statistics, and
a few held-out rankings with their scores.
"""
from __future__ import annotations

import collections
import dataclasses
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

from configs.reward_model import DEFAULT_PATHS
from lm import chat_template, cli, init_from, loop, losses, reward_model, sharding
from lm import model as model_lib
from lm.data import corpus, ranking_rows, rankings
from lm.errors import UserError
from lm.metrics import read_metrics

VAL_KEYS = ("loss", "accuracy", "margin", "top1")


@dataclasses.dataclass
class Run:
  config: ml_collections.ConfigDict
  workdir: str
  mesh: Any
  source: init_from.Source
  tokenizer: Any
  train_rows: ranking_rows.RankedRows
  val_rows: ranking_rows.RankedRows
  stats: dict


def validate(config) -> None:
  loop.validate_train(config)
  d = config.data
  if d.kind not in rankings.KINDS:
    raise UserError(f"config.data.kind: {d.kind!r} is not one of {', '.join(rankings.KINDS)}")
  if not d.path and d.kind not in DEFAULT_PATHS:
    raise UserError(f"config.data.path: data.kind={d.kind!r} needs a file (JSONL rankings)")
  if d.chat_template not in chat_template.FORMATS:
    raise UserError(f"config.data.chat_template: {d.chat_template!r} is not one of "
                    f"{', '.join(chat_template.FORMATS)}")
  if d.lang and d.kind != "oasst":
    raise UserError(f"config.data.lang: only OpenAssistant trees carry a language (data.kind={d.kind!r})")
  if d.max_rankings < 0:
    raise UserError(f"config.data.max_rankings must be ≥ 0 (0: all), got {d.max_rankings}")
  if config.model.head != reward_model.HEAD:
    raise UserError(f"config.model.head must be {reward_model.HEAD!r} for a reward model, got "
                    f"{config.model.head!r}")


def read_rankings(config) -> tuple[list[rankings.Ranking], collections.Counter]:
  d = config.data
  path = d.path or DEFAULT_PATHS[d.kind]
  if not os.path.exists(path):
    raise UserError(f"config.data.path: no such file {path!r} for data.kind={d.kind!r}")
  skipped: collections.Counter = collections.Counter()
  options = {"lang": d.lang or None} if d.kind == "oasst" else {}
  out = []
  for r in rankings.source(d.kind, path, skipped, **options):
    out.append(r)
    if len(out) == d.max_rankings:
      break
  return out, skipped


def setup(config: ml_collections.ConfigDict, workdir: str) -> Run:
  """Everything is checked before anything under the workdir is written."""
  validate(config)
  sharding.initialize_distributed()
  source = init_from.own_checkpoint(workdir) or init_from.resolve(config.init_from)
  with config.unlocked():
    config.model = init_from.merge_model_config(config.model, source)
  model_lib.validate(config.model)
  tok = source.tokenizer
  if tok is None:
    raise UserError(f"config.init_from: the source {source.path} has no tokenizer; copy the model's "
                    f"tokenizer files next to its config.json")
  fmt = chat_template.chat_format(config.data.chat_template, tok)
  if tok.vocab_size > config.model.vocab_size:
    raise UserError(f"config.init_from: tokenizer vocabulary {tok.vocab_size} exceeds the model's "
                    f"{config.model.vocab_size}")
  t = config.train
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(t.batch_size, t.grad_accum, mesh)
  sharding.check_model_fits(config.model, mesh)
  if config.model.positions == "learned" and t.seq_len > config.model.max_len:
    raise UserError(f"config.train.seq_len={t.seq_len} exceeds the model's max_len {config.model.max_len}")
  rows_per_chunk, extra = divmod(t.batch_size // t.grad_accum, jax.process_count())
  if extra:
    raise UserError(f"config.train.batch_size: a microbatch of {t.batch_size // t.grad_accum} rows does not "
                    f"split over {jax.process_count()} hosts")
  data, skipped = read_rankings(config)
  held = [corpus.is_heldout(r.key(), config.data.val_fraction) for r in data]
  val = [r for r, h in zip(data, held) if h]
  train = [r for r, h in zip(data, held) if not h]
  if not val or not train:
    raise UserError(f"config.data.val_fraction={config.data.val_fraction} leaves {len(val)} held-out and "
                    f"{len(train)} training rankings of {len(data)}; use more data or another fraction")
  train_rows = ranking_rows.RankedRows(train, tok, t.seq_len, rows_per_chunk, fmt=fmt, seed=config.seed)
  val_rows = ranking_rows.RankedRows(val, tok, t.seq_len, rows_per_chunk, fmt=fmt, seed=0)
  loop.lock_workdir(workdir)  # everything checked: from here on this job owns the workdir
  stats = {f"data/{k}": v for k, v in train_rows.stats.items()}
  stats.update({f"data/val_{k}": v for k, v in val_rows.stats.items()})
  stats.update({f"data/skipped ({why})": n for why, n in skipped.items()})
  print("reward data: " + ", ".join(f"{k[5:]} {v:.4g}" for k, v in stats.items()), flush=True)
  return Run(config, workdir, mesh, source, tok, train_rows, val_rows, stats)


def evaluate(run: Run, stage: loop.Stage, params) -> dict:
  """Every held-out ranking once: loss, pairwise accuracy, mean margin, top-1 (lm.losses.ranking_terms)."""
  ds = ranking_rows.dataset(run.val_rows, 1, seed=0, shuffle=False, repeat=False)
  ev = loop.held_out(stage, params, iter(ds), ranking_rows.num_batches(run.val_rows))
  return {f"val/{k}": ev[k] for k in VAL_KEYS}


def samples(run: Run, stage: loop.Stage, params) -> list[tuple[str, str]]:
  """The first held-out rankings: each reply's human rank and the model's score."""
  from jax.experimental import multihost_utils
  out, want = [], run.config.eval.samples
  for index in range(len(run.val_rows.chunks)):
    if len(out) >= want:
      break
    chunk = run.val_rows.chunk(index)  # every host scores the same chunk
    scores = stage.forward_step(params, sharding.host_batch_to_global(chunk, run.mesh))["scores"]
    scores = np.asarray(multihost_utils.process_allgather(scores, tiled=True))
    where = {gk: i for i, gk in enumerate(run.val_rows.rows_of(index))}
    for g in run.val_rows.chunks[index][:want - len(out)]:
      r = run.val_rows.rankings[g]
      lines = [f"rank {rank}, score {scores[where[(g, k)]]:+.3f}: {text[:160]!r}"
               for k, (rank, text) in enumerate(zip(r.ranks, r.responses))]
      out.append((r.prompt[-1]["content"][:200], "\n" + "\n".join(lines)))
  return out


def train_loop(run: Run) -> dict:
  cfg = run.config
  stage = loop.stage_from_config(cfg, run.mesh, losses.ranking, forward=losses.scores)
  batches = iter(ranking_rows.dataset(run.train_rows, cfg.train.grad_accum, seed=cfg.seed,
                                      prefetch_threads=cfg.data.prefetch_threads))
  hooks = loop.Hooks(
      batches=batches,
      tokens_in=lambda b: int(b["mask"].sum()),
      evaluate=lambda params: evaluate(run, stage, params),
      samples=lambda params: samples(run, stage, params),
      init_params=lambda: reward_model.load_params(run.source, stage, cfg.seed),
      train_metrics=("loss", "accuracy", "margin"),
      title="Reward model",
      report_sections=lambda final: report_sections(run, final))
  return loop.run(stage, cfg, run.workdir, run.tokenizer, hooks)


def report_sections(run: Run, final: dict) -> str:
  rows = [r for r in read_metrics(run.workdir) if "val/accuracy" in r]
  lines = ["## Held-out rankings", "",
           f"{run.val_rows.stats['rankings']} held-out rankings, {run.val_rows.stats['pairs']} pairs. Chance: "
           f"pairwise accuracy 0.5, top-1 {run.val_rows.stats['top1_chance']:.3f}.", "",
           "| step | loss | pairwise accuracy | mean margin | top-1 |", "|---|---|---|---|---|"]
  lines += [f"| {r['step']} | {r['val/loss']:.4f} | {r['val/accuracy']:.3f} | {r['val/margin']:+.3f} | "
            f"{r['val/top1']:.3f} |" for r in rows]
  lines += ["", "## Data", "", "| | |", "|---|---|"]
  lines += [f"| {k[5:]} | {v:.4g} |" for k, v in run.stats.items()]
  return "\n".join(lines)


def main(config: ml_collections.ConfigDict, workdir: str) -> dict:
  return train_loop(setup(config, workdir))


_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path:arg).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the run writes everything.")

if __name__ == "__main__":
  cli.run(lambda: setup(_CONFIG.value, _WORKDIR.value), train_loop)
