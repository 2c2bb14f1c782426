"""Key/value cache for incremental decoding, as explicit arrays passed into and out of the model.

Layout: every row writes slot `index` at the same time (the sampler keeps rows
in lockstep), so one scalar index addresses the whole batch and the write is a
single `dynamic_update_slice`, done in place inside a `while_loop`. The rollout
engine (`lm.engine`) lets rows advance independently (a row waiting on a tool
holds still while the others decode): there `index` is a (B,) vector, each row
writes its own slot, and masks and positions follow each row's own index. Prompts of
different lengths are left-padded: row b's real tokens start at slot
`start_B[b]`, and the mask hides the padding slots before it. Positions are per
row (slot − start), so a left-padded row sees exactly the positions it would
see alone.

Per layer the cache holds k, v of shape (B, K, S, Dh) in the compute dtype,
head-major, and `attend` reads it in that layout: with the sequence-major
layout the model uses elsewhere, XLA:CPU transposed the whole cache at every
step, which made decoding 3× slower at 320 slots. With `scan_layers` the layers
are stacked on a leading axis, matching the scanned parameters.
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
  shape = (batch, cfg.n_kv_heads, length, cfg.head_dim or cfg.d_model // cfg.n_heads)
  dtype = jnp.dtype(cfg.dtype)
  if cfg.scan_layers:
    zeros = jnp.zeros((cfg.n_layers, *shape), dtype)
    return {"layers": {"k": zeros, "v": zeros}}
  return {f"layer_{i}": {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
          for i in range(cfg.n_layers)}


def _slots(index: jax.Array, T: int) -> jax.Array:
  """(B or 1, T) slots of the T new tokens: a scalar index is shared by every row."""
  index_B = jnp.atleast_1d(index)
  return index_B[:, None] + jnp.arange(T)[None, :]


def write(layer_cache: Cache, k_BTKD: jax.Array, v_BTKD: jax.Array, index: jax.Array) -> Cache:
  """Store T new keys/values at slots index..index+T-1 (index: scalar, or one per row)."""
  def put(buf_BKSD, new_BTKD):
    new_BKTD = new_BTKD.transpose(0, 2, 1, 3).astype(buf_BKSD.dtype)
    if jnp.ndim(index) == 0:
      buf_BKSD = jax.lax.dynamic_update_slice(buf_BKSD, new_BKTD, (0, 0, index, 0))
    else:
      buf_BKSD = jax.vmap(lambda buf_KSD, new_KTD, i: jax.lax.dynamic_update_slice(
          buf_KSD, new_KTD, (0, i, 0)))(buf_BKSD, new_BKTD, index)
    return nn.with_logical_constraint(buf_BKSD, ("batch", "act_kv_heads", "length", None))
  return {"k": put(layer_cache["k"], k_BTKD), "v": put(layer_cache["v"], v_BTKD)}


def attend(q_BTHD: jax.Array, layer_cache: Cache, mask_B1TS: jax.Array) -> jax.Array:
  """Attention of T new queries over every cache slot; GQA groups G = H / K share a kv head.

  All S slots are read every step (unused ones masked): an online-softmax loop
  over only the written blocks measured slower on CPU at S ≤ 320 (loop and
  slicing overhead beat the saved reads).
  """
  k_BKSD, v_BKSD = layer_cache["k"], layer_cache["v"]
  B, T, H, Dh = q_BTHD.shape
  K = k_BKSD.shape[1]
  q_BKGTD = q_BTHD.reshape(B, T, K, H // K, Dh).transpose(0, 2, 3, 1, 4).astype(k_BKSD.dtype)
  scores_BKGTS = jnp.einsum("bkgtd,bksd->bkgts", q_BKGTD, k_BKSD,
                            preferred_element_type=jnp.float32) * (Dh ** -0.5)
  scores_BKGTS = jnp.where(mask_B1TS[:, :, None], scores_BKGTS, jnp.finfo(jnp.float32).min)
  probs_BKGTS = jax.nn.softmax(scores_BKGTS, axis=-1).astype(v_BKSD.dtype)
  out_BKGTD = jnp.einsum("bkgts,bksd->bkgtd", probs_BKGTS, v_BKSD)
  return out_BKGTD.transpose(0, 3, 1, 2, 4).reshape(B, T, H, Dh).astype(q_BTHD.dtype)


def mask(start_B: jax.Array, index: jax.Array, T: int, S: int) -> jax.Array:
  """(B, 1, T, S): query at slot index+t sees slots start..index+t of its row.

  A padding query (slot < start) sees only itself, so its softmax is never
  empty; nothing real ever looks at it.
  """
  q_BT = _slots(index, T)
  s_S = jnp.arange(S)
  causal_BTS = s_S[None, None, :] <= q_BT[:, :, None]
  valid_BS = s_S[None, :] >= start_B[:, None]
  self_BTS = s_S[None, None, :] == q_BT[:, :, None]
  return ((valid_BS[:, None, :] & causal_BTS) | self_BTS)[:, None]


def has_previous(start_B: jax.Array, S: int) -> jax.Array:
  """(B, S): slot s holds a token whose predecessor is a real token of its row (s − 1 ≥ start)."""
  return jnp.arange(S)[None, :] > start_B[:, None]


def positions(start_B: jax.Array, index: jax.Array, T: int) -> jax.Array:
  """(B, T) positions of slots index..index+T-1: slot − start, 0 on padding."""
  return jnp.maximum(_slots(index, T) - start_B[:, None], 0).astype(jnp.int32)
