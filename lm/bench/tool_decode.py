"""Tool-call decode benchmark (kind 'tool_decode' of experiments.bench): does a batch slow down when
half its rows call tools?

One model, one batch of prompts, three ways, alternating for `rounds` rounds
(medians reported):
  no_tools    the rollout engine, no tool calls
  half_tools  the same engine and prompts, tools on for the even rows only: each
              time such a row samples the call's end marker it pauses, a tool
              answers after `tool_latency_s` in a worker thread, and its output
              (`tool_output`, forced tokens) goes into the row's cache while the
              other rows keep decoding
  lockstep    `lm.sampling.generate`, the fixed-slot sampler (no tool support):
              what the engine's per-row slots cost
Every row emits exactly `new_tokens` tokens in every mode (no stop tokens), so
tokens_per_sec = batch × new_tokens / wall time of the whole call (prefill
included), sampled and forced tokens alike; the tool mode also reports its
sampled tokens alone. The headline is half_tools / no_tools.

A random model calls no tools by itself, so the call marker is given the id of
a token the even rows emit anyway (the one in most of their greedy outputs
without tools); a wide init (`model.init_std`) makes greedy decoding cycle, so
rows come back to it and call again. The calls per round are reported. The
weights' values do not change the arithmetic done per token.
"""
from __future__ import annotations

import collections
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm import engine, sampling
from lm import model as model_lib
from lm.bench import peer as peer_lib
from lm.tokenizer import ByteTokenizer


class _MarkerTokenizer(ByteTokenizer):
  """Bytes, with `<|python_end|>` moved onto a token the model emits by itself."""

  def __init__(self, end_id: int):
    super().__init__()
    self.special_ids = dict(self.special_ids, **{"<|python_end|>": end_id})


def run(config) -> dict:
  cfg = config.model
  model = model_lib.build(cfg)
  sample = jnp.zeros((1, 8), jnp.int32)
  params = jax.jit(lambda r: nn.meta.unbox(model.init(r, sample)["params"]))(jax.random.key(config.seed))
  rng = np.random.default_rng(config.seed)
  B, N = config.batch_size, config.new_tokens
  prompts = rng.integers(0, 256, (B, config.prompt_len)).tolist()  # byte ids: below every special id
  tool_rows = [b % 2 == 0 for b in range(B)]

  plain = ByteTokenizer()
  free = engine.rollout(model, params, plain, prompts, N, temperature=0.0, stop_ids=[])
  # The token in the most even rows (then the most often): a call per row at least once.
  rows_with = collections.Counter(t for b in range(0, B, 2) for t in set(free.tokens_BN[b].tolist()))
  counts = collections.Counter(t for b in range(0, B, 2) for t in free.tokens_BN[b].tolist())
  tok = _MarkerTokenizer(max(counts, key=lambda t: (rows_with[t], counts[t])))

  def tool(arguments: str) -> str:
    time.sleep(config.tool_latency_s)
    return config.tool_output

  def timed(fn):
    t = time.perf_counter()
    out = fn()
    jax.block_until_ready(out.tokens_BN if isinstance(out, engine.Rollout) else out.tokens)
    return out, time.perf_counter() - t

  kw = dict(temperature=0.0, stop_ids=[], chunk=config.chunk, poll_chunk=config.poll_chunk)
  no_tools = lambda: engine.rollout(model, params, tok, prompts, N, **kw)
  half_tools = lambda: engine.rollout(model, params, tok, prompts, N, tools={"python": tool},
                                      tool_rows=tool_rows, **kw)
  lockstep = lambda: sampling.generate(model, params, prompts, N, temperature=0.0)
  for fn in (no_tools, half_tools, lockstep):  # compile and warm up
    for _ in range(max(1, config.warmup_steps)):
      fn()
  last = {}

  def tools_side() -> float:
    out, s = timed(half_tools)
    last.update(calls=len(out.calls), forced=int(out.forced_BN.sum()),
                calling_rows=len({c.row for c in out.calls}), sampled_per_sec=float((~out.forced_BN).sum() / s))
    return B * N / s

  rounds = peer_lib.alternate(config.rounds, lambda: B * N / timed(no_tools)[1],
                              {"half_tools": tools_side, "lockstep": lambda: B * N / timed(lockstep)[1]})
  med = peer_lib.medians(rounds)
  return dict(
      batch_size=B, prompt_len=config.prompt_len, new_tokens=N, chunk=config.chunk, poll_chunk=config.poll_chunk,
      tool_latency_s=config.tool_latency_s, tool_output_tokens=len(tok.encode(config.tool_output)) + 2,
      calls_per_round=last["calls"], calling_rows=last["calling_rows"], forced_tokens_per_round=last["forced"],
      no_tools_tokens_per_sec=med["ours_tokens_per_sec"],
      half_tools_tokens_per_sec=med["half_tools_tokens_per_sec"],
      half_tools_sampled_tokens_per_sec=last["sampled_per_sec"],
      lockstep_tokens_per_sec=med["lockstep_tokens_per_sec"],
      half_tools_over_no_tools=float(np.median([r["half_tools_tokens_per_sec"] / r["ours_tokens_per_sec"]
                                                for r in rounds])),
      engine_over_lockstep=med["ratio_vs_lockstep"],
      headline="half_tools_over_no_tools", device=jax.devices()[0].device_kind, machine=peer_lib.machine(),
      rounds=rounds)
