"""The reward model's pieces around the shared stage: its starting parameters and its AOT compile.

A reward model is the transformer with `model.head='score'` (lm/model.py): the
trunk of an earlier stage (a base or SFT workdir, or a Hugging Face causal LM)
under a fresh scalar head. `load_params` reads the source's trunk straight into
its shards — the source's LM head is never read — and initialises the head from
the model's own initializer (normal, `model.init_std`). A source that already is
a reward model (a reward workdir, a *ForSequenceClassification folder) keeps its
head. Training is `lm.losses.ranking` through `lm.train.make_train_step`.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from lm import aot, init_from, loop, losses, sharding
from lm.errors import UserError

HEAD = "score"
# The batch lm.losses.ranking reads: name → (dtype, per-row shape is (T,) or ()).
BATCH = {"inputs": (np.int32, True), "mask": (np.int32, True), "group": (np.int32, False),
         "rank": (np.int32, False)}


def fresh_head(model_cfg, abstract_params: Any, seed: int) -> Any:
  """New "score" parameters, normal(0, model.init_std) as the model's initializer makes them, placed
  in their shards (drawn directly: a jitted model.init would compile the whole network for them)."""
  leaves, treedef = jax.tree.flatten(abstract_params[HEAD])
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  drawn = [jax.jit(lambda k, a=a: model_cfg.init_std * jax.random.normal(k, a.shape, a.dtype),
                   out_shardings=a.sharding)(k) for k, a in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, drawn)


def load_params(source: init_from.Source, stage: loop.Stage, seed: int) -> Any:
  """Parameters to start a reward model from `source`, placed like the stage's state."""
  abstract = stage.abstract_state().params
  if stage.model.cfg.head != HEAD:
    raise UserError(f"config.model.head must be {HEAD!r} for a reward model, got {stage.model.cfg.head!r}")
  if source.model_cfg.head == HEAD:
    return init_from.load_params(source, stage.model.cfg, abstract)
  trunk = init_from.load_params(source, stage.model.cfg, {k: v for k, v in abstract.items() if k != HEAD})
  return {**trunk, HEAD: fresh_head(stage.model.cfg, abstract, seed)}


def abstract_batch(stage: loop.Stage, batch_size: int, seq_len: int) -> dict:
  """A global ranking batch of ShapeDtypeStructs with the batch sharding (AOT)."""
  sh = sharding.batch_sharding(stage.mesh)
  return {k: jax.ShapeDtypeStruct((batch_size, seq_len) if per_token else (batch_size,), dt, sharding=sh)
          for k, (dt, per_token) in BATCH.items()}


def compile_train_step(config, mesh) -> tuple[object, dict]:
  """AOT-compile a reward-model config's train step (ranking loss, its batch) → (compiled, stats)."""
  sharding.check_model_fits(config.model, mesh)
  sharding.check_batch(config.train.batch_size, config.train.grad_accum, mesh)
  stage = loop.stage_from_config(config, mesh, losses.ranking)
  return aot.compile_stage_step(stage, abstract_batch(stage, config.train.batch_size, config.train.seq_len))
