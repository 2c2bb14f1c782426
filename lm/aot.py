"""Ahead-of-time compilation of the train step on abstract shapes.

Lowers and compiles the exact step a run would execute — same model, mesh,
rules, optimizer and batch — without allocating parameters or data, and reads
XLA's per-device memory estimate. Use it to check that a config fits before
booking the accelerators (experiments/compile.py is the command line).
"""
from __future__ import annotations

import time

import flax.linen as nn
import jax
import numpy as np

from lm import losses, sharding, train
from lm import model as model_lib


def compile_train_step(config, mesh) -> tuple[object, dict]:
  model = model_lib.build(config.model)
  sharding.check_model_fits(config.model, mesh)
  sharding.check_batch(config.train.batch_size, config.train.grad_accum, mesh)
  rules = sharding.rules(config)
  tx, schedule = train.make_optimizer(config.opt, config.train.steps)
  B, T = config.train.batch_size, config.train.seq_len
  micro = {"tokens_BT": jax.ShapeDtypeStruct((B // config.train.grad_accum, T), np.int32)}
  state_abs, state_sh = train.state_shardings(model, tx, mesh, rules, micro)
  step = train.make_train_step(losses.next_token(model), tx, schedule, mesh, rules, state_sh,
                               config.train.grad_accum)
  batch_sh = sharding.batch_sharding(mesh)
  batch = {k: jax.ShapeDtypeStruct((B, T), dt, sharding=batch_sh)
           for k, dt in (("inputs", np.int32), ("targets", np.int32), ("loss_mask", np.float32))}
  state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state_abs, state_sh)
  t = time.perf_counter()
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    compiled = step.jitted.lower(state, batch, jax.random.key(0)).compile()
  mem = compiled.memory_analysis()
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state_abs.params))
  stats = {
      "compile_s": time.perf_counter() - t,
      "params_billions": n_params / 1e9,
      "devices": mesh.devices.size,
      "mesh": dict(mesh.shape),
      "argument_gb_per_device": mem.argument_size_in_bytes / 1e9,
      "output_gb_per_device": mem.output_size_in_bytes / 1e9,
      "temp_gb_per_device": mem.temp_size_in_bytes / 1e9,
      "alias_gb_per_device": mem.alias_size_in_bytes / 1e9,
  }
  # Donated state aliases its outputs: peak ≈ arguments + temporaries (+ non-aliased outputs).
  stats["peak_gb_per_device"] = (mem.argument_size_in_bytes + mem.temp_size_in_bytes
                                 + mem.output_size_in_bytes - mem.alias_size_in_bytes) / 1e9
  return compiled, stats
