"""Decode benchmark (kind 'decode' of experiments.bench): our KV-cache sampler vs transformers' generate.

Same weights on both sides: our randomly initialised GPT-2-style model is
exported with lm.hf and loaded by `GPT2LMHeadModel.from_pretrained`. Both
decode greedily, batch 8, a 64-token prompt, exactly 256 new tokens (no stop
token), float32, on the same CPU. transformers runs in a child process
(`torch_peer.py`) the way its users run it, static cache with a compiled
forward (the headline), and with the default dynamic cache for reference.
The sides alternate for `rounds` rounds, one at a time; tokens_per_sec counts
generated tokens (B × new_tokens) over the wall time of whole generate calls
(prefill included) after warm-up, and every figure is the median over rounds.
The greedy tokens of the two sides must be identical, or no ratio.

On CPU, `cpu_devices` splits the machine into that many XLA devices and the
batch is sharded over them (mesh data axis): our sampler's own data
parallelism, using the cores that torch's intra-op threads use on the other
side. The device count is reported with the result.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm.bench import peer as peer_lib
from lm.errors import UserError
from lm import hf, sampling, sharding
from lm import model as model_lib


def time_ours(config, model, params, prompts: np.ndarray, mesh, rule_pairs):
  """→ (run() → one generate call's seconds, first tokens, compile seconds)."""
  def generate():
    out = sampling.generate(model, params, prompts.tolist(), config.new_tokens, temperature=0.0,
                            mesh=mesh, rule_pairs=rule_pairs)
    return jax.block_until_ready(out)

  t = time.perf_counter()
  tokens = np.asarray(generate().tokens)
  compile_s = time.perf_counter() - t
  for _ in range(config.warmup_steps):
    generate()

  def run() -> float:
    t = time.perf_counter()
    generate()
    return time.perf_counter() - t
  return run, tokens, compile_s


def check_tokens(ours: np.ndarray, theirs: np.ndarray, mode: str) -> float:
  """Same weights, both greedy: every row must agree on every token, or the sides did different work."""
  same = ours == theirs
  prefix = np.where(same.all(1), same.shape[1], np.argmin(same, 1))
  if not same.all():
    raise peer_lib.NotSameWork(f"decode: greedy tokens differ from transformers ({mode}): rows agree for "
                               f"{prefix.tolist()} of {same.shape[1]} tokens; no ratio")
  return float(prefix.mean())


def cpu_setup(n_devices: int, xla_flags: str) -> None:
  """Must run before JAX starts its backend; a process that already started it keeps its setup."""
  if xla_flags:
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()
  if n_devices > 0:
    try:
      jax.config.update("jax_num_cpu_devices", n_devices)
    except RuntimeError as e:
      print(f"cpu_devices={n_devices} not applied: {e}", flush=True)


def setup(config, modes: tuple, what: str = "decode"):
  """The checks, model, sharded parameters and random (batch, prompt_len) prompts both sides start from.

  → (model, params, mesh, rule_pairs, prompts). `modes` are the transformers modes to be run (empty:
  none), `what` the benchmark's name in errors. Call `cpu_setup` first."""
  cfg = config.model
  if modes:
    try:
      hf.family_of(cfg)
    except ValueError as e:
      raise peer_lib.NotSameWork(f"{what}: transformers cannot run this model ({e}); set config.peer=False") from None
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
  return model, params, mesh, rule_pairs, prompts


def run(config) -> dict:
  cpu_setup(config.cpu_devices, config.xla_cpu_flags)
  cfg = config.model
  modes = tuple(config.peer_modes) if config.peer else ()
  model, params, mesh, rule_pairs, prompts = setup(config, modes)

  ours_run, our_tokens, compile_s = time_ours(config, model, params, prompts, mesh, rule_pairs)
  result = dict(batch_size=config.batch_size, prompt_len=config.prompt_len, new_tokens=config.new_tokens,
                compile_s=compile_s, device=jax.devices()[0].device_kind, num_devices=jax.device_count(),
                mesh=dict(mesh.shape), dtype=cfg.dtype, xla_flags=os.environ.get("XLA_FLAGS", ""),
                machine=peer_lib.machine())
  per_call = config.batch_size * config.new_tokens
  with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
    if modes:
      hf.export_checkpoint(params, cfg, tmp)
      np.save(os.path.join(tmp, "prompts.npy"), prompts)
    peers = {}
    for mode in modes:
      print(f"transformers {mode}: setting up", flush=True)
      args = ["decode", "--weights", tmp, "--prompts", os.path.join(tmp, "prompts.npy"), "--mode", mode,
              "--new_tokens", str(config.new_tokens), "--warmup", str(max(config.warmup_steps, 1))]
      peers[mode] = stack.enter_context(peer_lib.PeerProcess(args, peer_lib.used_cores()))
      result[f"greedy_agreement_{mode}"] = check_tokens(our_tokens, np.asarray(peers[mode].ready["tokens"]), mode)
    work = per_call * config.steps
    rounds = peer_lib.alternate(
        config.rounds, lambda: work / sum(ours_run() for _ in range(config.steps)),
        {m: (lambda p=p: work / sum(p.run(config.steps)["times"])) for m, p in peers.items()})
  med = peer_lib.medians(rounds)
  result["tokens_per_sec"] = med["ours_tokens_per_sec"]
  result["ms_per_step"] = config.batch_size / med["ours_tokens_per_sec"] * 1e3
  for mode, p in peers.items():
    result[f"transformers_{mode}_tokens_per_sec"] = med[f"{mode}_tokens_per_sec"]
    result[f"speedup_vs_{mode}"] = med[f"ratio_vs_{mode}"]
    result[f"transformers_{mode}_settings"] = p.ready["settings"]
    result[f"transformers_{mode}_setup_s"] = p.ready["warmup_s"]
  if modes:
    result["headline"] = f"speedup_vs_{modes[0]}"
  result["rounds"] = rounds
  return result
