"""Train-step benchmark (kind 'train_step' of experiments.bench), with the peer side by side.

Times our jitted, sharded train step (AdamW, float32 by default) on the peer's
shapes, measures the device's matmul peak in the same process for MFU, then runs
the PyTorch peer script on the same machine and reports both and their ratio.
Ours and the peer run one after the other, never at once, so neither steals
the other's cores, and alternate for `rounds` rounds: shared machines drift by
±15% over minutes, so each round's ratio is taken between neighbours in time
and the reported ratio is the median of those. Within a round both sides time
the same way: the mean of `steps` consecutive steps after warm-up steps (the
peer script's own statistic).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jax
import numpy as np

from lm import loop, losses, ops, perf, sharding
from lm.cpu import malloc
from lm import model as model_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def setup_ours(config):
  """→ (run_steps(n) → list of step seconds, info dict) for our jitted train step."""
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.rules(config)
  sharding.check_batch(config.batch_size, 1, mesh)
  B, T = config.batch_size, config.seq_len
  stage = loop.build_stage(config.model, config.opt, config.rounds * (config.steps + config.warmup_steps),
                           mesh, rules, losses.next_token, micro_batch=B, seq_len=T)
  state, step = stage.init(config.seed), stage.train_step
  rng = np.random.default_rng(config.seed)
  tokens = rng.integers(0, config.model.vocab_size, (B, T + 1), dtype=np.int32)
  batch = sharding.host_batch_to_global(
      {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": np.ones((B, T), np.float32)}, mesh)
  key = jax.random.key(0)

  t = time.perf_counter()
  with jax.set_mesh(mesh):
    compiled = step.jitted.lower(state, batch, key).compile()
  compile_s = time.perf_counter() - t
  mem = compiled.memory_analysis()
  holder = {"state": state, "loss": None}

  def run_steps(n: int) -> list[float]:
    times = []
    for _ in range(n):
      t = time.perf_counter()
      holder["state"], metrics = step(holder["state"], batch, key)
      jax.block_until_ready(holder["state"])
      times.append(time.perf_counter() - t)
    holder["loss"] = float(metrics["loss"])
    return times

  run_steps(config.warmup_steps)
  info = {"compile_s": compile_s,
          "temp_memory_mb": getattr(mem, "temp_size_in_bytes", 0) / 1e6 if mem else None}
  return run_steps, info, holder


def summarize_ours(config, times: list[float], info: dict, loss: float) -> dict:
  B, T = config.batch_size, config.seq_len
  step_s = float(np.mean(times))
  tps = B * T / step_s
  peak = perf.measure_matmul_peak(config.model.dtype)
  flops_tok = model_lib.flops_per_token(config.model, T)
  return {
      "tokens_per_sec": tps, "step_ms": step_s * 1e3, "compile_s": info["compile_s"],
      "mfu": perf.mfu(flops_tok, tps, peak, jax.device_count()),
      "peak_matmul_gflops": peak / 1e9, "model_flops_per_token": flops_tok,
      "achieved_gflops": flops_tok * tps / 1e9, "loss": loss,
      "temp_memory_mb": info["temp_memory_mb"],
      "device": jax.devices()[0].device_kind, "num_devices": jax.device_count(),
      "dtype": config.model.dtype,
      "attention": ops.describe_attention(config.model.attention, model_lib.DTYPES[config.model.dtype]),
      "allocator": malloc.describe(),
  }


def run_peer(config) -> dict | None:
  script = os.path.join(ROOT, config.peer_script)
  if not os.path.exists(script):
    print(f"peer: {script} not found, skipping the comparison", file=sys.stderr)
    return None
  m = config.model
  cmd = [sys.executable, script, "--batch", str(config.batch_size), "--ctx", str(config.seq_len),
         "--d", str(m.d_model), "--layers", str(m.n_layers), "--heads", str(m.n_heads),
         "--vocab", str(m.vocab_size), "--steps", str(config.steps)]
  out = subprocess.run(cmd, capture_output=True, text=True)
  if out.returncode != 0:
    print(f"peer failed ({out.returncode}): {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    return None
  return json.loads(out.stdout.strip().splitlines()[-1])


def run(config) -> dict:
  run_steps, info, holder = setup_ours(config)
  ours_all, ratios, peers = [], [], []
  for r in range(config.rounds if config.peer else 1):
    times = run_steps(config.steps)
    ours_all += times
    if not config.peer:
      break
    peer = run_peer(config)
    if peer is None:
      break
    ours_tps = config.batch_size * config.seq_len / float(np.mean(times))
    peers.append(peer)
    ratios.append(ours_tps / peer["tokens_per_sec"])
    print(json.dumps({"round": r, "ours_tokens_per_sec": ours_tps,
                      "peer_tokens_per_sec": peer["tokens_per_sec"], "ratio": ratios[-1]}), flush=True)
  result = summarize_ours(config, ours_all, info, holder["loss"])
  if peers:
    peer_tps = float(np.median([p["tokens_per_sec"] for p in peers]))
    result["peer_tokens_per_sec"] = peer_tps
    result["peer_step_ms"] = config.batch_size * config.seq_len / peer_tps * 1e3
    result["peer_mfu"] = peer_tps * peers[0]["model_flops_per_token"] / 1e9 / result["peak_matmul_gflops"]
    result["speedup_vs_peer"] = float(np.median(ratios))
    result["speedup_per_round"] = ratios
  return result
