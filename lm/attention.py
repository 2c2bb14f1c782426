"""Scaled dot-product attention, by implementation.

  xla / cudnn / auto  `jax.nn.dot_product_attention` (cudnn: fused flash kernel on GPUs)
  einsum              written out head-major: (B,K,G,T,Dh) x (B,K,S,Dh) with the softmax in
                      float32. On CPU it is the fastest path we measured at small
                      shapes (see experiments/bench_train.py), since XLA:CPU runs
                      head-major batched matmuls without relayout copies.

Grouped-query attention: H query heads share K key/value heads (G = H / K).
`mask_B1TS` is True where a query may attend a key; None means causal (T == S).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("xla", "cudnn", "auto", "einsum")


def einsum_attention(q_BTHD, k_BSKD, v_BSKD, mask_B1TS=None):
  B, T, H, Dh = q_BTHD.shape
  S, K = k_BSKD.shape[1], k_BSKD.shape[2]
  q_BKGTD = q_BTHD.reshape(B, T, K, H // K, Dh).transpose(0, 2, 3, 1, 4)
  k_BKSD = k_BSKD.transpose(0, 2, 1, 3)
  v_BKSD = v_BSKD.transpose(0, 2, 1, 3)
  scores_BKGTS = jnp.einsum("bkgtd,bksd->bkgts", q_BKGTD, k_BKSD,
                            preferred_element_type=jnp.float32) * (Dh ** -0.5)
  if mask_B1TS is None:
    allowed = jnp.tril(jnp.ones((T, S), jnp.bool_))[None, None, None]
  else:
    allowed = mask_B1TS[:, :, None]  # (B, 1, 1, T, S) against (B, K, G, T, S)
  scores_BKGTS = jnp.where(allowed, scores_BKGTS, jnp.finfo(jnp.float32).min)
  probs_BKGTS = jax.nn.softmax(scores_BKGTS, axis=-1).astype(v_BSKD.dtype)
  out_BKGTD = jnp.einsum("bkgts,bksd->bkgtd", probs_BKGTS, v_BKSD)
  return out_BKGTD.transpose(0, 3, 1, 2, 4).reshape(B, T, H, Dh)


def attention(q_BTHD, k_BSKD, v_BSKD, mask_B1TS=None, *, impl: str = "xla"):
  if impl == "einsum":
    return einsum_attention(q_BTHD, k_BSKD, v_BSKD, mask_B1TS)
  implementation = None if impl == "auto" else impl
  if mask_B1TS is None:
    return jax.nn.dot_product_attention(q_BTHD, k_BSKD, v_BSKD, is_causal=True,
                                        implementation=implementation)
  return jax.nn.dot_product_attention(q_BTHD, k_BSKD, v_BSKD, mask=mask_B1TS,
                                      implementation=implementation)
