"""Rollout benchmark (kind 'rollout' of experiments.bench): GRPO's group sampling, our engine vs transformers.

The GRPO workload: B prompts, G samples of each (`samples_per_prompt`), sampled
at temperature 1 from the full softmax (no top-k, no top-p), no tools, exactly
`new_tokens` new tokens per row (no stop token on either side). Ours is
`lm.engine.rollout(..., samples_per_prompt=G)`, which prefills each prompt once
and copies its KV cache to its G rows; theirs is transformers'
`generate(do_sample=True, temperature=1.0, top_k=0, num_return_sequences=G)`
in a child process (`torch_peer.py rollout`) with the same GPT-2-style
weights (ours, exported with lm.hf), the same prompts, float32, on the same CPU.
top_k=0 is spelled out because transformers' own default samples from the top
50 only; min_new_tokens = max_new_tokens keeps its rows from stopping early.

Sampling is random, so tokens cannot be compared. What is checked instead:
both sides return B·G rows of exactly `new_tokens` tokens, and both sample the
same distribution: our model scores both sides' warm-up samples (mean
log-probability per token, i.e. minus a cross-entropy estimate), and the means
must agree within `logprob_tolerance` (top-k 50, another temperature or other
weights would move it far more). Otherwise no ratio.

tokens_per_sec counts B·G·new_tokens over the wall time of whole calls
(prefill included) after warm-up; the sides alternate for `rounds` rounds,
every figure is the median over rounds. transformers runs in the modes of
`peer_modes` (static cache + torch.compile'd forward, and the default dynamic
cache); `transformers_tokens_per_sec` is the faster of them, named by
`transformers_mode`, and `speedup_vs_transformers` the median ratio against it.

Other work on the machine skews the ratio, and not evenly: with the default
OpenMP wait policy torch's threads busy-wait, and on 2 cores shared with other
runs (load average 5-7) its generate ran ~10× slower than on a quiet moment while
ours lost ~2×. The JSON has the load average before and after the rounds. On a
shared machine export OMP_WAIT_POLICY=PASSIVE for the run (the peer's settings
record it; JAX ignores it): torch then lost only ~1.2×, and the ratio is, if
anything, unfavourable to us. Compare only numbers measured on quiet cores.
"""
from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import time
import types

import jax
import jax.numpy as jnp
import numpy as np

from lm import engine, hf
from lm.bench import decode as bench_decode
from lm.bench import peer as peer_lib

# The engine reads only these of a tokenizer when no tools and explicit (empty) stop ids are given.
_IDS = types.SimpleNamespace(pad_id=0, eos_id=None, special_ids={})


def check_rows(tokens_BN, rows: int, new_tokens: int, side: str, lengths_B=None) -> None:
  """Both sides must make `rows` rows of exactly `new_tokens` tokens, or they did different work.
  `lengths_B`: each row's own count where the side reports one (ours; transformers' rows are full
  by construction, min_new_tokens = max_new_tokens)."""
  shape = np.shape(tokens_BN)
  short = [] if lengths_B is None else sorted(set(np.asarray(lengths_B).tolist()) - {new_tokens})
  if shape != (rows, new_tokens) or short:
    raise peer_lib.NotSameWork(f"rollout: {side} made tokens of shape {shape}" + (f" with rows of {short} tokens"
                               if short else "") + f", expected {rows} rows of {new_tokens}; no ratio")


@functools.partial(jax.jit, static_argnames=("model",))
def _token_logprobs(params, seq_BT, new_BN, *, model):
  P = seq_BT.shape[1] - new_BN.shape[1]
  logits_BNV = model.apply({"params": params}, seq_BT)[:, P - 1:-1].astype(jnp.float32)
  return jnp.take_along_axis(jax.nn.log_softmax(logits_BNV, -1), new_BN[..., None], -1)[..., 0]


def mean_logprob(model, params, prompts_UP: np.ndarray, tokens_BN: np.ndarray, group: int) -> tuple[float, float]:
  """(mean, standard error) of log p(sampled token | prefix) under our model, over every sampled token."""
  tokens_BN = np.asarray(tokens_BN, np.int32)
  seq_BT = np.concatenate([np.repeat(prompts_UP, group, axis=0), tokens_BN], 1).astype(np.int32)
  lp = np.asarray(_token_logprobs(params, seq_BT, tokens_BN, model=model), np.float64).ravel()
  return float(lp.mean()), float(lp.std() / np.sqrt(lp.size))


def check_distribution(ours: tuple[float, float], theirs: tuple[float, float], tolerance: float, mode: str) -> float:
  """The two sides' mean log-probs must agree within `tolerance` nats, or 6 standard errors if larger."""
  diff = abs(ours[0] - theirs[0])
  allowed = max(tolerance, 6 * float(np.hypot(ours[1], theirs[1])))
  if diff > allowed:
    raise peer_lib.NotSameWork(f"rollout: transformers ({mode}) samples have mean log-prob {theirs[0]:.4f} under "
                               f"our model, ours {ours[0]:.4f} (allowed difference {allowed:.4f}): not the same "
                               "distribution; no ratio")
  return diff


def run(config) -> dict:
  bench_decode.cpu_setup(config.cpu_devices, config.xla_cpu_flags)
  modes = tuple(config.peer_modes) if config.peer else ()
  model, params, mesh, rule_pairs, prompts = bench_decode.setup(config, modes, what="rollout")
  U, G, N = config.batch_size, config.samples_per_prompt, config.new_tokens
  rows = U * G
  calls = iter(range(1 << 30))  # a new seed per call, as the peer's torch generator advances

  def rollout() -> engine.Rollout:
    return engine.rollout(model, params, _IDS, prompts.tolist(), N, temperature=1.0, samples_per_prompt=G,
                          stop_ids=[], seed=next(calls), chunk=config.chunk, mesh=mesh, rule_pairs=rule_pairs)

  t = time.perf_counter()
  first = rollout()
  compile_s = time.perf_counter() - t
  check_rows(first.tokens_BN, rows, N, "ours", first.lengths_B)
  for _ in range(config.warmup_steps):
    rollout()
  ours_lp = mean_logprob(model, params, prompts, first.tokens_BN, G)

  def ours_run() -> float:
    t = time.perf_counter()
    for _ in range(config.steps):
      rollout()  # returns host arrays: the work is done
    return rows * N * config.steps / (time.perf_counter() - t)

  result = dict(batch_size=U, samples_per_prompt=G, rows=rows, prompt_len=config.prompt_len, new_tokens=N,
                temperature=1.0, chunk=config.chunk, compile_s=compile_s, sample_logprob_mean=ours_lp[0],
                device=jax.devices()[0].device_kind, num_devices=jax.device_count(), mesh=dict(mesh.shape),
                dtype=config.model.dtype, xla_flags=os.environ.get("XLA_FLAGS", ""), machine=peer_lib.machine())
  with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
    peers = {}
    if modes:
      hf.export_checkpoint(params, config.model, tmp)
      np.save(os.path.join(tmp, "prompts.npy"), prompts)
    for mode in modes:
      print(f"transformers {mode}: setting up", flush=True)
      args = ["rollout", "--weights", tmp, "--prompts", os.path.join(tmp, "prompts.npy"), "--mode", mode,
              "--new_tokens", str(N), "--samples", str(G), "--warmup", str(max(config.warmup_steps, 1))]
      peers[mode] = stack.enter_context(peer_lib.PeerProcess(args, peer_lib.used_cores()))
      theirs = np.asarray(peers[mode].ready["tokens"])
      check_rows(theirs, rows, N, f"transformers ({mode})")
      their_lp = mean_logprob(model, params, prompts, theirs, G)
      result[f"transformers_{mode}_sample_logprob_mean"] = their_lp[0]
      result[f"logprob_gap_{mode}"] = check_distribution(ours_lp, their_lp, config.logprob_tolerance, mode)
    work = rows * N * config.steps
    result["load_average_before"] = os.getloadavg()  # other processes' load skews torch far more than us
    rounds = peer_lib.alternate(
        config.rounds, ours_run,
        {m: (lambda p=p: work / sum(p.run(config.steps)["times"])) for m, p in peers.items()})
  med = peer_lib.medians(rounds)
  result["load_average_after"] = os.getloadavg()
  result["tokens_per_sec"] = med["ours_tokens_per_sec"]
  for mode, p in peers.items():
    result[f"transformers_{mode}_tokens_per_sec"] = med[f"{mode}_tokens_per_sec"]
    result[f"speedup_vs_{mode}"] = med[f"ratio_vs_{mode}"]
    result[f"transformers_{mode}_settings"] = p.ready["settings"]
    result[f"transformers_{mode}_setup_s"] = p.ready["warmup_s"]
  if modes:  # the comparison is against transformers' faster mode on this machine
    best = max(modes, key=lambda m: med[f"{m}_tokens_per_sec"])
    result.update(transformers_mode=best, transformers_tokens_per_sec=med[f"{best}_tokens_per_sec"],
                  speedup_vs_transformers=med[f"ratio_vs_{best}"])
  result["rounds"] = rounds
  return result
