"""Key/value cache for incremental decoding, as explicit arrays passed into and out of the model.

Layout: every row writes slot `index` at the same time (the sampler keeps rows
in lockstep), so one scalar index addresses the whole batch and the write is a
single `dynamic_update_slice`, done in place inside a `while_loop`. Prompts of
different lengths are left-padded: row b's real tokens start at slot
`start_B[b]`, and the mask hides the padding slots before it. Positions are per
row (slot − start), so a left-padded row sees exactly the positions it would
see alone.

Per layer the cache holds k, v of shape (B, S, K, Dh) in the compute dtype;
with `scan_layers` the layers are stacked on a leading axis, matching the
scanned parameters.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

Cache = dict


def init(cfg: ml_collections.ConfigDict, batch: int, length: int) -> Cache:
  """Zeros for `length` slots; {'layer_i': {'k', 'v'}} or, scanned, {'layers': {'k', 'v'}}."""
  # lm.model imports this file, so its head_dim/DTYPES helpers are spelled out here.
  shape = (batch, length, cfg.n_kv_heads, cfg.head_dim or cfg.d_model // cfg.n_heads)
  dtype = jnp.dtype(cfg.dtype)
  if cfg.scan_layers:
    zeros = jnp.zeros((cfg.n_layers, *shape), dtype)
    return {"layers": {"k": zeros, "v": zeros}}
  return {f"layer_{i}": {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
          for i in range(cfg.n_layers)}


def write(layer_cache: Cache, k_BTKD: jax.Array, v_BTKD: jax.Array, index: jax.Array) -> Cache:
  """Store T new keys/values at slots index..index+T-1 of every row."""
  def put(buf_BSKD, new_BTKD):
    buf_BSKD = jax.lax.dynamic_update_slice(buf_BSKD, new_BTKD.astype(buf_BSKD.dtype), (0, index, 0, 0))
    return nn.with_logical_constraint(buf_BSKD, ("batch", "length", "act_kv_heads", None))
  return {"k": put(layer_cache["k"], k_BTKD), "v": put(layer_cache["v"], v_BTKD)}


def mask(start_B: jax.Array, index: jax.Array, T: int, S: int) -> jax.Array:
  """(B, 1, T, S): query at slot index+t sees slots start..index+t of its row.

  A padding query (slot < start) sees only itself, so its softmax is never
  empty; nothing real ever looks at it.
  """
  q_T = index + jnp.arange(T)
  s_S = jnp.arange(S)
  causal_TS = s_S[None, :] <= q_T[:, None]
  valid_BS = s_S[None, :] >= start_B[:, None]
  self_TS = s_S[None, :] == q_T[:, None]
  return ((valid_BS[:, None, :] & causal_TS[None]) | self_TS[None])[:, None]


def positions(start_B: jax.Array, index: jax.Array, T: int) -> jax.Array:
  """(B, T) positions of slots index..index+T-1: slot − start, 0 on padding."""
  return jnp.maximum(index + jnp.arange(T)[None, :] - start_B[:, None], 0).astype(jnp.int32)
