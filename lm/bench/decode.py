"""Decode benchmark (kind 'decode' of experiments.bench): our KV-cache sampler vs transformers' generate.

Same weights on both sides: our randomly initialised GPT-2-style model is
exported with lm.hf and loaded by `GPT2LMHeadModel.from_pretrained`. Both
decode greedily, batch 8, a 64-token prompt, exactly 256 new tokens (no stop
token), float32, on the same CPU, one after the other so neither steals the
other's cores. tokens_per_sec counts generated tokens (B × new_tokens) over the
median wall time of one whole generate call (prefill included), after warmup.

On CPU, `cpu_devices` splits the machine into that many XLA devices and the
batch is sharded over them (mesh data axis): our sampler's own data
parallelism, using the cores that torch's intra-op threads use on the other
side. The device count is reported with the result.
"""
from __future__ import annotations

import json
import os
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm.errors import UserError
from lm import hf, sampling, sharding
from lm import model as model_lib


def _median_time(fn, warmup: int, steps: int) -> tuple[float, list[float]]:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return float(np.median(times)), times


def time_ours(config, model, params, prompts: np.ndarray, mesh, rule_pairs) -> tuple[dict, np.ndarray]:
  def run():
    out = sampling.generate(model, params, prompts.tolist(), config.new_tokens, temperature=0.0,
                            mesh=mesh, rule_pairs=rule_pairs)
    return jax.block_until_ready(out)

  t = time.perf_counter()
  tokens = np.asarray(run().tokens)
  compile_s = time.perf_counter() - t
  sec, times = _median_time(run, config.warmup_steps, config.steps)
  return {"tokens_per_sec": prompts.shape[0] * config.new_tokens / sec, "generate_s": sec,
          "ms_per_step": sec / config.new_tokens * 1e3, "compile_s": compile_s,
          "times_s": times}, tokens


def time_transformers(config, model_cfg, params, prompts: np.ndarray) -> tuple[dict, np.ndarray] | None:
  try:
    import torch
    import transformers
  except ImportError as e:
    print(f"transformers comparison skipped: {e}", flush=True)
    return None
  with tempfile.TemporaryDirectory() as folder:
    hf.export_checkpoint(params, model_cfg, folder)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
  ids = torch.as_tensor(prompts, dtype=torch.long)

  def run():
    with torch.inference_mode():
      return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=config.new_tokens,
                            min_new_tokens=config.new_tokens, do_sample=False, pad_token_id=0,
                            use_cache=True)

  tokens = run().numpy()[:, prompts.shape[1]:]
  sec, times = _median_time(run, max(config.warmup_steps - 1, 0), config.steps)
  return {"tokens_per_sec": prompts.shape[0] * config.new_tokens / sec, "generate_s": sec,
          "ms_per_step": sec / config.new_tokens * 1e3, "times_s": times,
          "torch_threads": torch.get_num_threads(), "version": transformers.__version__}, tokens


def _cpu_setup(n_devices: int, xla_flags: str) -> None:
  """Must run before JAX starts its backend; a process that already started it keeps its setup."""
  if xla_flags:
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()
  if n_devices > 0:
    try:
      jax.config.update("jax_num_cpu_devices", n_devices)
    except RuntimeError as e:
      print(f"cpu_devices={n_devices} not applied: {e}", flush=True)


def run(config) -> dict:
  _cpu_setup(config.cpu_devices, config.xla_cpu_flags)
  cfg = config.model
  if cfg.positions == "learned" and config.prompt_len + config.new_tokens > cfg.max_len:
    raise UserError(f"config.model.max_len={cfg.max_len} < prompt_len + new_tokens "
                     f"= {config.prompt_len + config.new_tokens}")
  model = model_lib.build(cfg)
  mesh = sharding.make_mesh(config.mesh)
  rule_pairs = sharding.rules(config)
  sample = jnp.zeros((1, 8), jnp.int32)
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(config.seed), sample)["params"])
  param_sh = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rule_pairs)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rule_pairs):
    params = jax.jit(lambda r: nn.meta.unbox(model.init(r, sample)["params"]),
                     out_shardings=param_sh)(jax.random.key(config.seed))
  rng = np.random.default_rng(config.seed)
  prompts = rng.integers(0, cfg.vocab_size, (config.batch_size, config.prompt_len)).astype(np.int32)

  ours, our_tokens = time_ours(config, model, params, prompts, mesh, rule_pairs)
  result = dict(ours, batch_size=config.batch_size, prompt_len=config.prompt_len,
                new_tokens=config.new_tokens, device=jax.devices()[0].device_kind,
                num_devices=jax.device_count(), mesh=dict(mesh.shape), dtype=cfg.dtype,
                xla_flags=os.environ.get("XLA_FLAGS", ""))
  print(json.dumps({"ours": result}), flush=True)
  if config.peer:
    peer = time_transformers(config, cfg, params, prompts)
    if peer:
      theirs, their_tokens = peer
      result["transformers_tokens_per_sec"] = theirs["tokens_per_sec"]
      result["transformers_generate_s"] = theirs["generate_s"]
      result["transformers_times_s"] = theirs["times_s"]
      result["transformers_version"] = theirs["version"]
      result["torch_threads"] = theirs["torch_threads"]
      result["speedup_vs_transformers"] = result["tokens_per_sec"] / theirs["tokens_per_sec"]
      # Same weights, both greedy: the outputs agree up to float-rounding near-ties.
      same = our_tokens == their_tokens
      prefix = np.where(same.all(1), same.shape[1], np.argmin(same, 1))
      result["greedy_agreement_prefix_mean"] = float(prefix.mean())
  return result
