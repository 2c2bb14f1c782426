"""Scaled dot-product attention, by implementation.

  xla / cudnn / auto  `jax.nn.dot_product_attention` (cudnn: fused flash kernel on GPUs)
  einsum              written out head-major, (B,K,G,T,Dh) x (B,K,S,Dh), softmax in float32,
                      queries in blocks of 64 that skip the key blocks above the
                      causal diagonal (10/16 of the work at T=256). The fastest CPU
                      path we measured: a train step on the benchmark shapes is
                      ~13% faster than with `xla` (experiments/bench_train.py).

Grouped-query attention: H query heads share K key/value heads (G = H / K).
`mask_B1TS` is True where a query may attend a key; None means causal (T == S).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("xla", "cudnn", "auto", "einsum")


def _einsum_block(q_BKGTD, k_BKSD, v_BKSD, allowed, scale):
  scores_BKGTS = jnp.einsum("bkgtd,bksd->bkgts", q_BKGTD, k_BKSD,
                            preferred_element_type=jnp.float32) * scale
  scores_BKGTS = jnp.where(allowed, scores_BKGTS, jnp.finfo(jnp.float32).min)
  probs_BKGTS = jax.nn.softmax(scores_BKGTS, axis=-1).astype(v_BKSD.dtype)
  return jnp.einsum("bkgts,bksd->bkgtd", probs_BKGTS, v_BKSD)


def einsum_attention(q_BTHD, k_BSKD, v_BSKD, mask_B1TS=None, block_q: int = 64):
  """Head-major attention; causal self-attention skips the key blocks above the diagonal.

  Queries are split into blocks of `block_q`; block i attends keys [0, (i+1)·block_q)
  only, so scores, softmax and both matmuls cost (n+1)/2n of the full T×T
  (10/16 at T=256, block 64). Each block's softmax is exact (it sees all of its
  keys), so no online rescaling is needed.
  """
  B, T, H, Dh = q_BTHD.shape
  S, K = k_BSKD.shape[1], k_BSKD.shape[2]
  q_BKGTD = q_BTHD.reshape(B, T, K, H // K, Dh).transpose(0, 2, 3, 1, 4)
  k_BKSD = k_BSKD.transpose(0, 2, 1, 3)
  v_BKSD = v_BSKD.transpose(0, 2, 1, 3)
  scale = Dh ** -0.5

  def allowed(t0, t1, s1):  # (B|1, 1, 1, t1-t0, s1) against (B, K, G, T, S)
    if mask_B1TS is None:
      return (jnp.arange(t0, t1)[:, None] >= jnp.arange(s1)[None, :])[None, None, None]
    return mask_B1TS[:, :, None, t0:t1, :s1]

  if T != S or T <= block_q or T % block_q:
    out_BKGTD = _einsum_block(q_BKGTD, k_BKSD, v_BKSD, allowed(0, T, S), scale)
  else:
    out_BKGTD = jnp.concatenate([
        _einsum_block(q_BKGTD[:, :, :, t0:t0 + block_q], k_BKSD[:, :, :t0 + block_q],
                      v_BKSD[:, :, :t0 + block_q], allowed(t0, t0 + block_q, t0 + block_q), scale)
        for t0 in range(0, T, block_q)], axis=3)
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
