"""Ahead-of-time compilation of a stage's train step on abstract shapes.

Lowers and compiles the exact step a run would execute — same model, mesh,
rules, optimizer, loss and batch — without allocating parameters or data, and
reads XLA's per-device memory estimate. Use it to check that a config fits
before booking the accelerators (experiments/compile.py is the command line).
Any loss works: pass its factory and the batch keys it reads.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import flax.linen as nn
import jax
import numpy as np

from lm import grpo, loop, losses, sharding

NEXT_TOKEN_BATCH = {"inputs": np.int32, "targets": np.int32, "loss_mask": np.float32}
PACKED_BATCH = dict(NEXT_TOKEN_BATCH, positions=np.int32, segment_ids=np.int32)


def compile_stage_step(stage: loop.Stage, batch: dict[str, Any]) -> tuple[object, dict]:
  """Compiles `stage.train_step` for an abstract global batch; → (compiled, memory stats)."""
  state = stage.abstract_state()
  t = time.perf_counter()
  with jax.set_mesh(stage.mesh), nn.logical_axis_rules(stage.rules):
    compiled = stage.train_step.jitted.lower(state, batch, jax.random.key(0)).compile()
  mem = compiled.memory_analysis()
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(stage.state_abs.params))
  stats = {
      "compile_s": time.perf_counter() - t,
      "params_billions": n_params / 1e9,
      "devices": stage.mesh.devices.size,
      "mesh": dict(stage.mesh.shape),
      "argument_gb_per_device": mem.argument_size_in_bytes / 1e9,
      "output_gb_per_device": mem.output_size_in_bytes / 1e9,
      "temp_gb_per_device": mem.temp_size_in_bytes / 1e9,
      "alias_gb_per_device": mem.alias_size_in_bytes / 1e9,
  }
  # Donated state aliases its outputs: peak ≈ arguments + temporaries (+ non-aliased outputs).
  stats["peak_gb_per_device"] = (mem.argument_size_in_bytes + mem.temp_size_in_bytes
                                 + mem.output_size_in_bytes - mem.alias_size_in_bytes) / 1e9
  return compiled, stats


def compile_train_step(config, mesh, loss: Callable = losses.next_token,
                       batch_keys: dict[str, Any] | None = None) -> tuple[object, dict]:
  """AOT-compile the train step of an experiment config (pretraining by default)."""
  sharding.check_model_fits(config.model, mesh)
  sharding.check_batch(config.train.batch_size, config.train.grad_accum, mesh)
  stage = loop.stage_from_config(config, mesh, loss)
  batch = stage.abstract_batch(config.train.batch_size, config.train.seq_len, batch_keys or NEXT_TOKEN_BATCH)
  return compile_stage_step(stage, batch)


def compile_grpo_step(config, mesh) -> tuple[object, dict]:
  """AOT-compile a GRPO config's train step (configs/grpo.py): rollout rows with positions and
  segments, old (and reference) log-probs per token, one advantage per row."""
  sharding.check_model_fits(config.model, mesh)
  sharding.check_batch(config.train.batch_size, config.train.grad_accum, mesh)
  rl = config.rl
  loss = lambda model: losses.grpo(model, clip_low=rl.clip_low, clip_high=rl.clip_high, kl_coef=rl.kl_coef,
                                   aggregation=rl.aggregation, max_new_tokens=rl.max_new_tokens)
  stage = loop.stage_from_config(config, mesh, loss)
  B, T = config.train.batch_size, config.train.seq_len
  keys = dict(PACKED_BATCH, **{k: np.float32 for k, used in grpo.forward_keys(rl).items() if used})
  batch = stage.abstract_batch(B, T, keys)
  batch["advantages"] = jax.ShapeDtypeStruct((B,), np.float32, sharding=sharding.batch_sharding(mesh))
  return compile_stage_step(stage, batch)
