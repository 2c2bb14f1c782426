"""Pretrain a base model: python -m experiments.pretrain --config=configs/pretrain.py:tiny --workdir=runs/tiny

Reads the config, builds the mesh, tokenizes the corpus into shards once
(cached in <workdir>/data), initialises or resumes the train state from the
newest checkpoint in <workdir>/checkpoints, then trains with the shared step,
evaluating on held-out documents and sampling continuations as it goes.

The workdir ends up with config.json, metrics.jsonl, tensorboard/,
checkpoints/, loss.png and report.md.
"""
from __future__ import annotations

import base64
import dataclasses
import math
import os
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import flags
from ml_collections import config_flags

from lm.errors import MissingFile, UserError
from lm import checkpoint as ckpt_lib
from lm import cli
from lm import loop, losses, probes, sampling, sharding
from lm import model as model_lib
from lm import tokenizer as tokenizer_lib
from lm.data import packed as data_lib
from lm.data import shards as shards_lib


@dataclasses.dataclass
class Run:
  config: ml_collections.ConfigDict
  workdir: str
  mesh: Any
  rules: Any
  tokenizer: Any
  model: nn.Module
  train_dir: str
  val_dir: str
  bytes_per_token: float


def resolve_tokenizer(config):
  """data.tokenizer='auto': a prepared folder's own tokenizer, else bytes."""
  spec = config.data.tokenizer
  prepared = os.path.join(config.data.path, "train")
  if spec == "auto":
    if os.path.exists(os.path.join(prepared, shards_lib.META)):
      return tokenizer_lib.load_tokenizer(shards_lib.TokenShards(prepared).tokenizer_path)
    spec = "byte"
  return tokenizer_lib.load_tokenizer(spec)


def validate(config) -> None:
  """Config errors a user can make, caught before any compilation."""
  model_lib.validate(config.model)
  loop.validate_train(config)
  t = config.train
  if t.seq_len > config.model.max_len and config.model.positions == "learned":
    raise UserError(f"config.train.seq_len={t.seq_len} exceeds config.model.max_len={config.model.max_len}")


def setup(config: ml_collections.ConfigDict, workdir: str) -> Run:
  validate(config)
  sharding.initialize_distributed()
  mesh = sharding.make_mesh(config.mesh)
  sharding.check_batch(config.train.batch_size, config.train.grad_accum, mesh)
  tok = resolve_tokenizer(config)
  if config.data.path != "default" and not os.path.exists(config.data.path):
    raise MissingFile(f"config.data.path: no such file or folder {config.data.path!r}")
  with config.unlocked():
    if config.model.vocab_size == 0:
      config.model.vocab_size = int(math.ceil(tok.vocab_size / 64) * 64)  # lane-friendly padding
  sharding.check_model_fits(config.model, mesh)
  if config.model.vocab_size < tok.vocab_size:
    raise UserError(f"config.model.vocab_size={config.model.vocab_size} is smaller than the "
                     f"tokenizer's {tok.vocab_size}")
  loop.lock_workdir(workdir)  # the config checked: from here on this job owns the workdir
  train_dir, val_dir = data_lib.prepare(config.data, tok, os.path.join(workdir, "data"))
  for d in (train_dir, val_dir):
    shards_lib.check_vocab(tok.vocab_size, data_lib.vocab_of(d), f"token shards {d!r}")
  check_checkpoint_tokenizer(workdir, tok, train_dir)
  return Run(config, workdir, mesh, sharding.rules(config), tok, model_lib.build(config.model),
             train_dir, val_dir, data_lib.bytes_per_token(val_dir, tok))


def check_checkpoint_tokenizer(workdir: str, tok, train_dir: str) -> None:
  """A resume reads shards made by the checkpoint's own tokenizer: same vocabulary size and the
  same tokenizer file bytes (a different BPE of the same size would otherwise train silently)."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    return
  ck = ckpt_lib.Checkpointer(ckpt_dir, keep=1, every=1, async_save=False)
  try:
    step = ck.latest_step()
    if step is None:
      return
    _, record = ck.restore_meta(step)
  finally:
    ck.close()
  where = f"checkpoint {ckpt_dir}/{step}"
  shards_lib.check_vocab(tok.vocab_size, record["vocab_size"], where)
  if os.path.exists(os.path.join(train_dir, shards_lib.META)):
    shards_lib.check_tokenizer_bytes(train_dir, base64.b64decode(record["data_b64"]), where)


def evaluate(run: Run, stage: loop.Stage, params) -> dict:
  cfg = run.config
  host_batch = cfg.train.batch_size // cfg.train.grad_accum // jax.process_count()
  ds = data_lib.dataset(run.val_dir, cfg.train.seq_len, host_batch, seed=0, shuffle=False,
                        repeat=True, document_mask=cfg.data.document_mask)
  ev = loop.held_out(stage, params, iter(ds), cfg.train.eval_batches)
  out = {"val/loss": ev["loss"], "val/accuracy": ev["accuracy"],
         "val/bits_per_byte": ev["loss"] / math.log(2) / run.bytes_per_token}
  if run.model.cfg.vocab_size >= 128:  # in-context copying (lm/probes.py): nats gained on a repeated sequence
    out["val/copy_gain"] = probes.copy_gain(run.model, params, run.model.cfg.vocab_size, mesh=run.mesh)["gain"]
  return out


def samples(run: Run, params) -> list[tuple[str, str]]:
  """Continue the configured prompts with the KV-cache sampler, stopping at EOS."""
  cfg = run.config.sample
  prompts = [[run.tokenizer.bos_id] + run.tokenizer.encode(p) for p in cfg.prompts]
  out = sampling.generate(run.model, params, prompts, cfg.max_new_tokens,
                          temperature=cfg.temperature, top_k=cfg.top_k, seed=0,
                          stop_ids=[run.tokenizer.eos_id], pad_id=run.tokenizer.pad_id,
                          mesh=run.mesh, rule_pairs=run.rules)
  tokens, lengths = sharding.to_host((out.tokens, out.lengths))
  return [(p, run.tokenizer.decode([t for t in tokens[i, :lengths[i]].tolist() if t != run.tokenizer.eos_id]))
          for i, p in enumerate(cfg.prompts)]


def train_loop(run: Run) -> dict:
  cfg = run.config
  stage = loop.stage_from_config(cfg, run.mesh, losses.next_token)
  host_batch = cfg.train.batch_size // jax.process_count()
  data_iter = iter(data_lib.dataset(run.train_dir, cfg.train.seq_len, host_batch,
                                    seed=cfg.data.shuffle_seed, shuffle=True, repeat=True,
                                    document_mask=cfg.data.document_mask,
                                    prefetch_threads=cfg.data.prefetch_threads))
  hooks = loop.Hooks(
      batches=data_iter,
      tokens_in=lambda b: b["inputs"].size,
      evaluate=lambda params: evaluate(run, stage, params),
      samples=lambda params: samples(run, params),
      title="Pretraining")
  return loop.run(stage, cfg, run.workdir, run.tokenizer, hooks)


def main(config: ml_collections.ConfigDict, workdir: str) -> dict:
  return train_loop(setup(config, workdir))


_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (path:arg).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the run writes everything.")

if __name__ == "__main__":
  cli.run(lambda: setup(_CONFIG.value, _WORKDIR.value), train_loop)
