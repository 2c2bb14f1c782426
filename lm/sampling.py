"""Sampling from the model: batched prefill + decode with a KV cache, all inside jit.

  out = generate(model, params, [[1, 2, 3], [4, 5]], max_new_tokens=32,
                 temperature=0.8, top_p=0.95, stop_ids=[eos], seed=0)
  out.tokens (B, N), out.logprobs (B, N), out.lengths (B,)

Prompts are left-padded into one (B, P) buffer so every row writes the same
cache slot at each step (`lm.kv_cache`); each row still gets its own positions
and never sees the padding. The prompt is prefilled in one forward pass, then a
`lax.while_loop` samples and feeds one token per iteration until every row has
hit a stop token or its own length limit. Rows that finish early emit `pad_id`
afterwards. A row's output includes its stop token (GRPO and SFT want to learn
to stop), and `lengths` counts it.

`logprobs` are log p(token) under the model itself (temperature 1, no top-k or
top-p filtering): the policy probabilities that GRPO's importance ratios need,
whatever sampling distribution was used to pick the token.

Streaming (`stream`): prefill once, then decode `chunk` tokens per jitted call,
yielding each chunk; the random stream is indexed by step, so the chunked
tokens equal `generate`'s with the same seed.

With a mesh (`mesh`, `rule_pairs`), the prompts are split over the batch axes
and the model's logical constraints shard activations and the cache (batch over
data×fsdp, kv heads over tensor); parameters keep the shardings they came with.

`sample_uncached` recomputes the whole prefix at every step: O(T²) work, the
reference that the cached sampler is tested against.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm.errors import UserError
from lm import kv_cache
from lm import sharding as sharding_lib


def filter_logits(logits_BV: jax.Array, temperature, top_k=0, top_p=1.0):
  """Temperature, then top-k, then top-p (nucleus) masking; -inf outside the support.

  The settings may be traced scalars: one compiled sampler serves every setting,
  and `lax.cond` skips the sorts when a filter is off.
  """
  logits_BV = logits_BV / jnp.maximum(temperature, 1e-6)
  V = logits_BV.shape[-1]

  def keep_top_k(l_BV):
    k = jnp.clip(top_k, 1, V)
    kth_B1 = jnp.take_along_axis(jnp.sort(l_BV, -1), jnp.full((l_BV.shape[0], 1), V - k), -1)
    return jnp.where(l_BV < kth_B1, -jnp.inf, l_BV)

  def keep_top_p(l_BV):
    sorted_BV = jnp.sort(l_BV, axis=-1)[:, ::-1]
    cum_BV = jnp.cumsum(jax.nn.softmax(sorted_BV, -1), -1)
    # keep the smallest prefix whose mass reaches top_p (always at least one token)
    cutoff_idx_B1 = jnp.minimum(jnp.sum(cum_BV < top_p, -1, keepdims=True), V - 1)
    cutoff_B1 = jnp.take_along_axis(sorted_BV, cutoff_idx_B1, -1)
    return jnp.where(l_BV < cutoff_B1, -jnp.inf, l_BV)

  logits_BV = jax.lax.cond(top_k > 0, keep_top_k, lambda l: l, logits_BV)
  return jax.lax.cond(top_p < 1.0, keep_top_p, lambda l: l, logits_BV)


def inverse_cdf(probs_BV: jax.Array, rng: jax.Array) -> jax.Array:
  """One draw per row from `probs_BV` (rows sum to ~1, zeros allowed) with two uniform numbers:
  a block of ~√V tokens by the blocks' masses, then a token inside it.

  Each cumulative sum runs over ~√V terms: float32 rounding moves the sampled distribution
  by ~1e-6 (V = 4096) to ~5e-6 (V = 128k) in total variation, where one cumsum over all V
  entries moved it by ~3e-5 to ~1e-3. A token of zero probability (a top-k/top-p cut) is
  never drawn: in the rare row where rounding would land on one, the row takes the last
  token of positive probability in its heaviest block instead.
  """
  B, V = probs_BV.shape
  K = 1 << ((max(V, 2) - 1).bit_length() // 2)  # block size, a power of two near √V
  N = -(-V // K)
  p_BNK = jnp.pad(probs_BV, ((0, 0), (0, N * K - V))).reshape(B, N, K)
  u_B2 = jax.random.uniform(rng, (B, 2), minval=jnp.finfo(jnp.float32).tiny)

  def pick(mass_BX, u_B):  # the first entry whose cumulative mass exceeds u × total
    cum_BX = jnp.cumsum(mass_BX, -1)
    return jnp.minimum(jnp.sum(cum_BX < u_B[:, None] * cum_BX[:, -1:], -1), mass_BX.shape[-1] - 1)

  def token_in(block_B, u_B):
    return block_B * K + pick(jnp.take_along_axis(p_BNK, block_B[:, None, None], 1)[:, 0], u_B)

  mass_BN = p_BNK.sum(-1)
  token_B = jnp.minimum(token_in(pick(mass_BN, u_B2[:, 0]), u_B2[:, 1]), V - 1).astype(jnp.int32)
  # Per row, not a batch-wide branch, so that a sharded batch needs no collective here.
  likely_B = token_in(jnp.argmax(mass_BN, -1), jnp.ones_like(u_B2[:, 1])).astype(jnp.int32)
  ok_B = jnp.take_along_axis(probs_BV, token_B[:, None], -1)[:, 0] > 0
  return jnp.where(ok_B, token_B, likely_B)


def choose(logits_BV: jax.Array, rng: jax.Array, temperature, top_k=0, top_p=1.0) -> jax.Array:
  """Next token per row: argmax when temperature is 0, else a draw from the filtered softmax.

  The draw inverts the cumulative distribution (`inverse_cdf`: two uniform numbers per
  row). The Gumbel-max draw (`jax.random.categorical`) needs one per vocabulary entry, and
  making 64 × 4096 of them took ~7 of the ~21 CPU-ms of a decode step in the rollout
  benchmark (B=64, V=4096, on CPU); with this the step takes ~14.
  """
  def draw(l_BV):
    return inverse_cdf(jax.nn.softmax(filter_logits(l_BV, temperature, top_k, top_p), -1), rng)
  return jax.lax.cond(temperature == 0.0, lambda l: jnp.argmax(l, -1).astype(jnp.int32), draw, logits_BV)


class Generation(NamedTuple):
  tokens: jax.Array    # (B, N) int32; pad_id after a row's end
  logprobs: jax.Array  # (B, N) float32 log p(token | prefix) under the model; 0 after the end
  lengths: jax.Array   # (B,) int32 tokens generated, stop token included


class DecodeState(NamedTuple):
  """Everything the decode loop carries; a pytree, so it crosses jit boundaries for streaming."""
  cache: Any
  logits_BV: jax.Array   # next-token logits of every row
  slot: jax.Array        # () cache slot the next fed token is written to
  start_B: jax.Array     # first real slot of each row (left padding before it)
  step: jax.Array        # () tokens emitted so far (the same for all rows)
  done_B: jax.Array
  limit_B: jax.Array     # per-row max new tokens
  stop_BS: jax.Array     # per-row stop ids, -1 padded
  tokens_BN: jax.Array
  logprobs_BN: jax.Array
  rng: jax.Array


def _prefill(model, params, prompt_BP, start_B, limit_B, stop_BS, rng, *, max_new_tokens):
  B, P = prompt_BP.shape
  cache = kv_cache.init(model.cfg, B, P + max_new_tokens)
  logits_BPV, cache = model.apply({"params": params}, prompt_BP, cache=cache,
                                  cache_index=jnp.int32(0), cache_start_B=start_B)
  return DecodeState(
      cache=cache, logits_BV=logits_BPV[:, -1], slot=jnp.int32(P), start_B=start_B,
      step=jnp.int32(0), done_B=limit_B <= 0, limit_B=limit_B, stop_BS=stop_BS,
      tokens_BN=jnp.zeros((B, max_new_tokens), jnp.int32),
      logprobs_BN=jnp.zeros((B, max_new_tokens), jnp.float32), rng=rng)


def _decode(model, params, state: DecodeState, temperature, top_k, top_p, pad_id, *, steps):
  """Up to `steps` more tokens (fewer if every row is done or the buffer is full)."""
  N = state.tokens_BN.shape[1]
  end = jnp.minimum(state.step + steps, N)

  def cond(s: DecodeState):
    return (s.step < end) & ~jnp.all(s.done_B)

  def body(s: DecodeState):
    rng = jax.random.fold_in(s.rng, s.step)
    token_B = choose(s.logits_BV, rng, temperature, top_k, top_p)
    active_B = ~s.done_B
    token_B = jnp.where(active_B, token_B, pad_id)
    logp_B = jnp.take_along_axis(jax.nn.log_softmax(s.logits_BV, -1), token_B[:, None], -1)[:, 0]
    logp_B = jnp.where(active_B, logp_B, 0.0)
    stopped_B = jnp.any(token_B[:, None] == s.stop_BS, -1)
    done_B = s.done_B | (active_B & stopped_B) | (s.step + 1 >= s.limit_B)
    logits_B1V, cache = model.apply({"params": params}, token_B[:, None], cache=s.cache,
                                    cache_index=s.slot, cache_start_B=s.start_B)
    return s._replace(
        cache=cache, logits_BV=logits_B1V[:, 0], slot=s.slot + 1, step=s.step + 1, done_B=done_B,
        tokens_BN=jax.lax.dynamic_update_slice(s.tokens_BN, token_B[:, None], (0, s.step)),
        logprobs_BN=jax.lax.dynamic_update_slice(s.logprobs_BN, logp_B[:, None], (0, s.step)))

  return jax.lax.while_loop(cond, body, state)


def _lengths(state: DecodeState) -> jax.Array:
  """Tokens each row emitted: up to and including its stop token, at most its limit."""
  N = state.tokens_BN.shape[1]
  emitted_BN = jnp.arange(N)[None, :] < state.step
  stop_BN = jnp.any(state.tokens_BN[:, :, None] == state.stop_BS[:, None, :], -1) & emitted_BN
  first_stop_B = jnp.where(jnp.any(stop_BN, -1), jnp.argmax(stop_BN, -1) + 1, state.step)
  return jnp.minimum(jnp.minimum(first_stop_B, state.limit_B), state.step).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens"))
def _generate(model, params, prompt_BP, start_B, limit_B, stop_BS, rng, temperature, top_k, top_p, pad_id, *,
              max_new_tokens):
  state = _prefill(model, params, prompt_BP, start_B, limit_B, stop_BS, rng, max_new_tokens=max_new_tokens)
  state = _decode(model, params, state, temperature, top_k, top_p, pad_id, steps=max_new_tokens)
  return Generation(state.tokens_BN, state.logprobs_BN, _lengths(state))


_prefill_jit = jax.jit(_prefill, static_argnames=("model", "max_new_tokens"))
_decode_jit = jax.jit(_decode, static_argnames=("model", "steps"), donate_argnames=("state",))


def sampling_settings(temperature, top_k, top_p, pad_id):
  """Traced scalars, so that changing a setting never recompiles."""
  if temperature < 0 or top_k < 0 or not 0.0 < top_p <= 1.0:
    raise UserError(f"sampling: need temperature ≥ 0, top_k ≥ 0, 0 < top_p ≤ 1; got "
                     f"temperature={temperature}, top_k={top_k}, top_p={top_p}")
  return jnp.float32(temperature), jnp.int32(top_k), jnp.float32(top_p), jnp.int32(pad_id)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, multiple: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """(B, P) left-padded prompts and each row's first real slot; P rounded up to `multiple`
  so that prompts of nearby lengths share one compiled program."""
  if not prompts or any(len(p) == 0 for p in prompts):
    raise UserError("sampling: every prompt needs at least one token (e.g. a BOS id)")
  P = -(-max(len(p) for p in prompts) // multiple) * multiple
  buf = np.full((len(prompts), P), pad_id, np.int32)
  start = np.zeros(len(prompts), np.int32)
  for i, p in enumerate(prompts):
    buf[i, P - len(p):] = p
    start[i] = P - len(p)
  return buf, start


def _stops(stop_ids, B: int) -> np.ndarray:
  """A list of ids for every row, or one list per row → (B, S) padded with -1."""
  rows = [list(r) for r in stop_ids] if stop_ids and not isinstance(stop_ids[0], (int, np.integer)) \
      else [list(stop_ids or [])] * B
  if len(rows) != B:
    raise UserError(f"sampling: {len(rows)} per-row stop lists for {B} prompts")
  out = np.full((B, max(1, max(len(r) for r in rows))), -1, np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


def batch_inputs(model, prompts, max_new_tokens, stop_ids, max_new_B, pad_id, pad_multiple, mesh):
  cfg = model.cfg
  prompt_BP, start_B = left_pad(prompts, pad_id, pad_multiple)
  B, P = prompt_BP.shape
  if cfg.positions == "learned" and (prompt_BP.shape[1] - start_B).max() + max_new_tokens > cfg.max_len:
    raise UserError(f"config.model.max_len={cfg.max_len} is shorter than the longest prompt "
                     f"({int((P - start_B).max())}) + max_new_tokens ({max_new_tokens})")
  limit_B = np.full(B, max_new_tokens, np.int32) if max_new_B is None else \
      np.minimum(np.asarray(max_new_B, np.int32), max_new_tokens)
  arrays = (prompt_BP, start_B, limit_B, _stops(stop_ids, B))
  if mesh is not None and B % sharding_lib.batch_axis_size(mesh) == 0:
    arrays = tuple(jax.device_put(a, sharding_lib.batch_sharding(mesh)) for a in arrays)
  return arrays


def mesh_context(mesh, rule_pairs):
  if mesh is None:
    return contextlib.nullcontext()
  stack = contextlib.ExitStack()
  stack.enter_context(jax.set_mesh(mesh))
  stack.enter_context(nn.logical_axis_rules(rule_pairs))
  return stack


def generate(model, params, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
             stop_ids: Sequence[int] | Sequence[Sequence[int]] = (), max_new_B=None, pad_id: int = 0,
             pad_multiple: int = 1, mesh=None, rule_pairs=()) -> Generation:
  """Continue every prompt (token-id lists of any lengths) in one jitted prefill + decode loop.

  temperature 0 is greedy; top_k 0 and top_p 1 switch those filters off.
  stop_ids: ids that end every row, or one list per row. max_new_B: per-row
  limits (≤ max_new_tokens).
  """
  arrays = batch_inputs(model, prompts, max_new_tokens, stop_ids, max_new_B, pad_id, pad_multiple, mesh)
  settings = sampling_settings(temperature, top_k, top_p, pad_id)
  with mesh_context(mesh, rule_pairs):
    return _generate(model, params, *arrays, jax.random.key(seed), *settings,
                     max_new_tokens=int(max_new_tokens))


def stream(model, params, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, chunk: int = 8,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
           stop_ids=(), max_new_B=None, pad_id: int = 0, pad_multiple: int = 1, mesh=None,
           rule_pairs=()) -> Iterator[np.ndarray]:
  """Yield (B, ≤chunk) new tokens as they are decoded; rows that are done yield pad_id."""
  arrays = batch_inputs(model, prompts, max_new_tokens, stop_ids, max_new_B, pad_id, pad_multiple, mesh)
  settings = sampling_settings(temperature, top_k, top_p, pad_id)
  with mesh_context(mesh, rule_pairs):
    state = _prefill_jit(model, params, *arrays, jax.random.key(seed), max_new_tokens=int(max_new_tokens))
  emitted = 0
  while emitted < max_new_tokens:
    with mesh_context(mesh, rule_pairs):
      state = _decode_jit(model, params, state, *settings, steps=chunk)
    step = int(state.step)
    if step == emitted:
      return
    yield sharding_lib.to_host(state.tokens_BN[:, emitted:step])
    emitted = step
    if bool(jnp.all(state.done_B)):
      return


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "temperature", "top_k"))
def _sample(model, params, tokens_BT, lengths_B, rng, *, max_new_tokens, temperature, top_k):
  B, T = tokens_BT.shape

  def body(i, carry):
    tokens_BT, rng = carry
    logits_BTV = model.apply({"params": params}, tokens_BT)
    pos_B = lengths_B + i - 1
    logits_BV = jnp.take_along_axis(logits_BTV, pos_B[:, None, None], 1)[:, 0]
    rng, sub = jax.random.split(rng)
    next_B = choose(logits_BV, sub, temperature, top_k)
    tokens_BT = tokens_BT.at[jnp.arange(B), pos_B + 1].set(next_B.astype(tokens_BT.dtype))
    return tokens_BT, rng

  tokens_BT, _ = jax.lax.fori_loop(0, max_new_tokens, body, (tokens_BT, rng))
  return tokens_BT


def sample_uncached(model, params, prompts: list[list[int]], max_new_tokens: int, *,
                    temperature: float = 1.0, top_k: int = 0, seed: int = 0, pad_id: int = 0):
  """Continue each prompt (right-padded into one buffer); returns the new ids per prompt."""
  lengths = np.array([len(p) for p in prompts], np.int32)
  total = int(lengths.max()) + max_new_tokens
  buf = np.full((len(prompts), total), pad_id, np.int32)
  for i, p in enumerate(prompts):
    buf[i, :len(p)] = p
  out = _sample(model, params, jnp.asarray(buf), jnp.asarray(lengths), jax.random.key(seed),
                max_new_tokens=max_new_tokens, temperature=float(temperature), top_k=int(top_k))
  out = np.asarray(out)
  return [out[i, lengths[i]:lengths[i] + max_new_tokens].tolist() for i in range(len(prompts))]


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
  """The text before the earliest stop string, and whether one was found."""
  hits = [text.index(s) for s in stops if s and s in text]
  return (text[:min(hits)], True) if hits else (text, False)
