"""Sampling from the model.

`sample_uncached` recomputes the whole prefix at every step: O(T²) work, used
for evaluation-time samples of small models and as the reference that the
KV-cache sampler is tested against.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def filter_logits(logits_BV: jax.Array, temperature: float, top_k: int = 0, top_p: float = 1.0):
  """Temperature, then top-k, then top-p (nucleus) masking; -inf outside the support."""
  logits_BV = logits_BV / jnp.maximum(temperature, 1e-6)
  if top_k > 0:
    kth_B1 = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
    logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
  if top_p < 1.0:
    sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
    cum_BV = jnp.cumsum(jax.nn.softmax(sorted_BV, -1), -1)
    # keep the smallest prefix whose mass reaches top_p (always at least one token)
    cutoff_idx_B1 = jnp.sum(cum_BV < top_p, -1, keepdims=True)
    cutoff_B1 = jnp.take_along_axis(sorted_BV, cutoff_idx_B1, -1)
    logits_BV = jnp.where(logits_BV < cutoff_B1, -jnp.inf, logits_BV)
  return logits_BV


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "temperature", "top_k"))
def _sample(model, params, tokens_BT, lengths_B, rng, *, max_new_tokens, temperature, top_k):
  B, T = tokens_BT.shape

  def body(i, carry):
    tokens_BT, rng = carry
    logits_BTV = model.apply({"params": params}, tokens_BT)
    pos_B = lengths_B + i - 1
    logits_BV = jnp.take_along_axis(logits_BTV, pos_B[:, None, None], 1)[:, 0]
    rng, sub = jax.random.split(rng)
    if temperature == 0.0:
      next_B = jnp.argmax(logits_BV, -1)
    else:
      next_B = jax.random.categorical(sub, filter_logits(logits_BV, temperature, top_k))
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
