"""Train-step benchmark (kind 'train_step' of experiments.bench): ours beside PyTorch, same work.

Our jitted, sharded train step (AdamW, float32) and a nanoGPT-style PyTorch
step (`torch_peer.py`) start from the same weights (ours, exported to the
GPT-2 layout) on the same batch with the same optimizer settings. The peer runs
as its users run it, `torch.compile` with fused AdamW, and eager for reference,
each in its own child process with torch's threads set to the cores we use.

Ours and the peers alternate for `rounds` rounds, one side at a time, `steps`
steps each; a side's tokens/s in a round is B·T over its mean step time, and
every reported figure, ours, the peers' and the ratios, is the median of the
per-round values. MFU uses one FLOP count (`lm.model.flops_per_token`) on every
side, against the matmul peak measured in this run and the CPU's nominal FMA peak.

Same work is checked, not assumed: the config must be one the peer can run
(GPT-2 family, tied embeddings, float32, constant learning rate), and the losses
of the first steps, which both sides compute from identical weights and data,
must agree; otherwise `NotSameWork` and no ratio.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time

import jax
import numpy as np

from lm import hf, loop, losses, perf, sharding
from lm import model as model_lib
from lm.bench import peer as peer_lib
from lm.cpu import malloc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOSS_RTOL = 2e-3  # relative agreement of the warm-up losses (same weights, same batch, float32)


def check_same_work(config) -> None:
  """The keys where the PyTorch peer could not do what our step does, as one NotSameWork."""
  m, o = config.model, config.opt
  bad = []
  try:
    family = hf.family_of(m)
  except ValueError as e:
    family, why = None, str(e)
  else:
    why = f"family {family}"
  if family != "gpt2":
    bad.append(f"model is not GPT-2 style ({why})")
  if not m.tie_embeddings:
    bad.append("model.tie_embeddings=False (the peer ties its head to the embedding)")
  if m.dtype != "float32":
    bad.append(f"model.dtype={m.dtype} (the peer runs float32)")
  if o.name != "adamw":
    bad.append(f"opt.name={o.name} (the peer runs AdamW)")
  if o.schedule != "constant" or o.warmup_steps:
    bad.append(f"opt.schedule={o.schedule}, opt.warmup_steps={o.warmup_steps} (the peer's lr is constant)")
  if bad:
    raise peer_lib.NotSameWork("train_step: the peer cannot do the same work: " + "; ".join(bad)
                               + " (or set config.peer=False to time ours alone)")


class Ours:
  """Our compiled train step on a fixed batch; `run(n)` → n step times."""

  def __init__(self, config):
    mesh = sharding.make_mesh(config.mesh)
    rules = sharding.rules(config)
    sharding.check_batch(config.batch_size, 1, mesh)
    B, T = config.batch_size, config.seq_len
    total = config.rounds * (config.steps + config.warmup_steps) + config.warmup_steps
    self.stage = loop.build_stage(config.model, config.opt, total, mesh, rules, losses.next_token,
                                  micro_batch=B, seq_len=T)
    self.state = self.stage.init(config.seed)
    self.initial_params = jax.device_get(self.state.params)
    self.tokens = np.random.default_rng(config.seed).integers(0, config.model.vocab_size, (B, T + 1), dtype=np.int32)
    self.batch = sharding.host_batch_to_global(
        {"inputs": self.tokens[:, :-1], "targets": self.tokens[:, 1:], "loss_mask": np.ones((B, T), np.float32)},
        mesh)
    self.key = jax.random.key(0)
    t = time.perf_counter()
    with jax.set_mesh(mesh):
      compiled = self.stage.train_step.jitted.lower(self.state, self.batch, self.key).compile()
    self.compile_s = time.perf_counter() - t
    mem = compiled.memory_analysis()
    self.temp_memory_mb = getattr(mem, "temp_size_in_bytes", 0) / 1e6 if mem else None
    self.warmup_losses = [self.step() for _ in range(config.warmup_steps)]

  def step(self) -> float:
    self.state, metrics = self.stage.train_step(self.state, self.batch, self.key)
    jax.block_until_ready(self.state)
    return float(metrics["loss"])

  def run(self, n: int) -> list[float]:
    times = []
    for _ in range(n):
      t = time.perf_counter()
      self.state, _ = self.stage.train_step(self.state, self.batch, self.key)
      jax.block_until_ready(self.state)
      times.append(time.perf_counter() - t)
    return times


def check_losses(ours: list[float], theirs: list[float], mode: str) -> None:
  """Identical weights, batch and optimizer: the first steps' losses agree to float32 rounding."""
  n = min(len(ours), len(theirs))
  rel = [abs(a - b) / abs(b) for a, b in zip(ours[:n], theirs[:n])]
  if not n or max(rel) > LOSS_RTOL:
    raise peer_lib.NotSameWork(f"train_step: warm-up losses differ from the peer ({mode}): ours "
                               f"{[round(x, 5) for x in ours[:n]]} vs {[round(x, 5) for x in theirs[:n]]} "
                               f"(relative tolerance {LOSS_RTOL}): the two sides do not do the same work")


def peer_args(config, weights: str, tokens: str, mode: str) -> list[str]:
  o = config.opt
  return ["train", "--weights", weights, "--tokens", tokens, "--mode", mode, "--warmup", str(config.warmup_steps),
          "--lr", repr(o.lr), "--b1", repr(o.b1), "--b2", repr(o.b2), "--eps", repr(o.eps),
          "--weight_decay", repr(o.weight_decay), "--clip_norm", repr(o.clip_norm)]


def run(config) -> dict:
  if config.peer:
    check_same_work(config)
  attention = peer_lib.check_ran_as_configured(config.model)
  B, T = config.batch_size, config.seq_len
  ours = Ours(config)
  flops_tok = model_lib.flops_per_token(config.model, T)
  threads = peer_lib.used_cores()
  modes = tuple(config.peer_modes) if config.peer else ()
  result = {"batch_size": B, "seq_len": T, "dtype": config.model.dtype, "attention": attention,
            "weight_grad": config.model.weight_grad, "compile_s": ours.compile_s,
            "temp_memory_mb": ours.temp_memory_mb, "device": jax.devices()[0].device_kind,
            "num_devices": jax.device_count(), "allocator": malloc.describe(),
            "xla_intra_op_threads": threads, "model_flops_per_token": flops_tok,
            "warmup_losses": ours.warmup_losses, "machine": peer_lib.machine()}

  with tempfile.TemporaryDirectory() as tmp:
    if modes:
      hf.export_checkpoint(ours.initial_params, config.model, tmp)
      np.save(os.path.join(tmp, "tokens.npy"), ours.tokens)
    with contextlib.ExitStack() as stack:
      peers = {}
      for mode in modes:
        print(f"peer {mode}: setting up (compilation takes a minute or two on a small CPU)", flush=True)
        peers[mode] = stack.enter_context(peer_lib.PeerProcess(
            peer_args(config, tmp, os.path.join(tmp, "tokens.npy"), mode), threads))
        check_losses(ours.warmup_losses, peers[mode].ready["warmup_losses"], mode)
      rounds = peer_lib.alternate(
          config.rounds, lambda: B * T / float(np.mean(ours.run(config.steps))),
          {m: (lambda p=p: B * T / float(np.mean(p.run(config.steps)["times"]))) for m, p in peers.items()})

  med = peer_lib.medians(rounds)
  measured_peak = perf.measure_matmul_peak(config.model.dtype)
  nominal = result["machine"]["nominal_fp32_peak_gflops"]
  for side in ("ours", *peers):
    tps = med[f"{side}_tokens_per_sec"]
    key = "" if side == "ours" else f"peer_{side}_"
    result[f"{key}tokens_per_sec"] = tps
    result[f"{key}step_ms"] = B * T / tps * 1e3
    result[f"{key}mfu"] = flops_tok * tps / measured_peak / jax.device_count()
    result[f"{key}mfu_nominal"] = flops_tok * tps / (nominal * 1e9) if nominal else None
  for mode, p in peers.items():
    result[f"speedup_vs_{mode}"] = med[f"ratio_vs_{mode}"]
    result[f"peer_{mode}_settings"] = p.ready["settings"]
    result[f"peer_{mode}_setup_s"] = p.ready["warmup_s"]
  if modes:
    result["headline"] = f"speedup_vs_{modes[0]}"
  result["measured_matmul_peak_gflops"] = measured_peak / 1e9
  result["rounds"] = rounds
  return result
