"""One process of the loopback multi-host test (tests/test_multihost.py runs it).

Environment: JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID when
multi-process (absent for the single-process reference). Each process feeds
only its own rows of the global batch. Prints one JSON line with the losses.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from configs import base  # noqa: E402
from lm import loop, losses, sharding  # noqa: E402

B, T = 8, 16


def main():
  sharding.initialize_distributed()
  cfg = base.model_config("llama_tiny")
  cfg.update(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_len=32)
  config = ml_collections.ConfigDict({"sharding_rules": base.SHARDING_RULES})
  rules = sharding.rules(config)
  mesh = sharding.make_mesh(base.mesh_config(data=2, fsdp=-1, tensor=1))
  stage = loop.build_stage(cfg, base.optimizer_config(lr=1e-2), 10, mesh, rules, losses.next_token,
                           micro_batch=B, seq_len=T)
  state, step = stage.init(seed=0), stage.train_step
  rows = B // jax.process_count()
  mine = slice(jax.process_index() * rows, (jax.process_index() + 1) * rows)
  out = []
  for _ in range(3):  # the same batch: the loss must fall
    tok = np.random.default_rng(0).integers(0, 64, (B, T + 1)).astype(np.int32)
    local = {"inputs": tok[mine, :-1], "targets": tok[mine, 1:], "loss_mask": np.ones((rows, T), np.float32)}
    state, metrics = step(state, sharding.host_batch_to_global(local, mesh), jax.random.key(0))
    out.append(float(metrics["loss"]))
  norm = float(jax.jit(lambda p: sum(jax.numpy.sum(x * x) for x in jax.tree.leaves(p)))(state.params))
  print(json.dumps({"process": jax.process_index(), "devices": jax.device_count(), "losses": out,
                    "param_sq_norm": norm}), flush=True)


if __name__ == "__main__":
  main()
