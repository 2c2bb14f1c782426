"""Attention for XLA:CPU, registered by `lm.cpu.register()` under two names.

  einsum              written out head-major for CPUs: queries in blocks of 64 that
                      skip the key blocks above the causal diagonal (10/16 of the
                      work at T=256), softmax in float32, and a hand-written
                      backward pass (`_blocked_bwd`). Any mask, any dtype.
  cpu_kernel          causal float32 self-attention as one fused C++ kernel per
                      pass (lm/cpu/attention_cpu.cc, an XLA FFI custom call):
                      the (T, T) scores stay in cache and the backward recomputes
                      them from the saved log-sum-exp. The fastest CPU path we
                      measured (lm/bench/train_step.py; numbers in the README).
                      Packed rows (contiguous segments) pass their segment
                      starts and skip the keys before them. Anything it does
                      not cover (a dense mask, bfloat16, no C++
                      compiler, a sequence-sharded mesh, another backend) runs
                      `einsum` instead, or `auto` off the CPU.

Grouped-query attention: H query heads share K key/value heads (G = H / K).
`mask_B1TS` is True where a query may attend a key; None means causal (T == S).
"""
from __future__ import annotations

import functools
import logging
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm import ops
from lm.cpu import build as cpu_kernels

_F32 = jnp.float32


def _allowed(mask_B1TS, t0, t1, s1):
  """(B|1, 1, 1, t1-t0, s1) mask of block [t0, t1) × keys [0, s1), against (B, K, G, t, s)."""
  if mask_B1TS is None:
    return (jnp.arange(t0, t1)[:, None] >= jnp.arange(s1)[None, :])[None, None, None]
  return mask_B1TS[:, :, None, t0:t1, :s1]


def _blocked_fwd(q_BKGTD, k_BKSD, v_BKSD, mask_B1TS, blocks):
  """Output and, per query block, the unnormalised probabilities and 1/row-sum.

  Normalising after the PV product divides (t, Dh) instead of (t, s) values.
  """
  outs, probs, inv_sums = [], [], []
  for t0, t1, s1 in blocks:
    scores = jnp.einsum("bkgtd,bksd->bkgts", q_BKGTD[:, :, :, t0:t1], k_BKSD[:, :, :s1],
                        preferred_element_type=_F32)
    scores = jnp.where(_allowed(mask_B1TS, t0, t1, s1), scores, jnp.finfo(_F32).min)
    p = jnp.exp(scores - scores.max(-1, keepdims=True)).astype(v_BKSD.dtype)
    inv_sum = 1.0 / p.astype(_F32).sum(-1, keepdims=True)
    out = jnp.einsum("bkgts,bksd->bkgtd", p, v_BKSD[:, :, :s1], preferred_element_type=_F32)
    outs.append((out * inv_sum).astype(q_BKGTD.dtype))
    probs.append(p)
    inv_sums.append(inv_sum)
  return jnp.concatenate(outs, axis=3), probs, inv_sums


def _blocked_bwd(q_BKGTD, k_BKSD, v_BKSD, mask_B1TS, blocks, out_BKGTD, probs, inv_sums, dout_BKGTD):
  """Flash-attention-style backward: dS = P ∘ (dP − rowsum(dO ∘ O)), from the stored P.

  dK and dV are formed transposed, (Dh, s) = (Dh, t)·(t, s), so the large
  (t, s) operands feed the matmuls in the layout they were produced in, and only
  (t, Dh)-sized ones get transposed.
  """
  S = k_BKSD.shape[2]
  delta = jnp.sum(dout_BKGTD.astype(_F32) * out_BKGTD.astype(_F32), -1, keepdims=True)
  dq_blocks, dk_BKDS, dv_BKDS = [], 0.0, 0.0
  for (t0, t1, s1), p, inv_sum in zip(blocks, probs, inv_sums):
    q, k, v = q_BKGTD[:, :, :, t0:t1], k_BKSD[:, :, :s1], v_BKSD[:, :, :s1]
    dout = (dout_BKGTD[:, :, :, t0:t1] * inv_sum).astype(v.dtype)  # P = p / sum, folded into dO
    dv = jnp.einsum("bkgtd,bkgts->bkds", dout, p, preferred_element_type=_F32)
    dp = jnp.einsum("bkgtd,bksd->bkgts", dout, v, preferred_element_type=_F32)
    ds = p * (dp - delta[:, :, :, t0:t1] * inv_sum)
    if mask_B1TS is not None:  # rows with no allowed key have uniform p; keep their gradient out
      ds = jnp.where(_allowed(mask_B1TS, t0, t1, s1), ds, 0.0)
    ds = ds.astype(q.dtype)
    dq_blocks.append(jnp.einsum("bkgts,bksd->bkgtd", ds, k, preferred_element_type=_F32))
    dk = jnp.einsum("bkgtd,bkgts->bkds", q, ds, preferred_element_type=_F32)
    pad = ((0, 0), (0, 0), (0, 0), (0, S - s1))
    dk_BKDS = dk_BKDS + jnp.pad(dk, pad)
    dv_BKDS = dv_BKDS + jnp.pad(dv, pad)
  return jnp.concatenate(dq_blocks, axis=3), dk_BKDS, dv_BKDS


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _blocked(q_BTHD, k_BSKD, v_BSKD, mask_B1TS, num_kv_heads, blocks):
  return _blocked_with_residuals(q_BTHD, k_BSKD, v_BSKD, mask_B1TS, num_kv_heads, blocks)[0]


def _head_major(q_BTHD, k_BSKD, v_BSKD, K):
  B, T, H, Dh = q_BTHD.shape
  q_BKGTD = (q_BTHD * Dh ** -0.5).reshape(B, T, K, H // K, Dh).transpose(0, 2, 3, 1, 4)
  return q_BKGTD, k_BSKD.transpose(0, 2, 1, 3), v_BSKD.transpose(0, 2, 1, 3)


def _blocked_with_residuals(q_BTHD, k_BSKD, v_BSKD, mask_B1TS, K, blocks):
  # The backward keeps the head-major copies (not the inputs): no second round of transposes.
  q_BKGTD, k_BKSD, v_BKSD = _head_major(q_BTHD, k_BSKD, v_BSKD, K)
  out_BKGTD, probs, inv_sums = _blocked_fwd(q_BKGTD, k_BKSD, v_BKSD, mask_B1TS, blocks)
  B, T, H, Dh = q_BTHD.shape
  out_BTHD = out_BKGTD.transpose(0, 3, 1, 2, 4).reshape(B, T, H, Dh)
  return out_BTHD, (q_BKGTD, k_BKSD, v_BKSD, mask_B1TS, out_BKGTD, probs, inv_sums)


def _blocked_vjp_bwd(K, blocks, residuals, dout_BTHD):
  q_BKGTD, k_BKSD, v_BKSD, mask_B1TS, out_BKGTD, probs, inv_sums = residuals
  B, T, H, Dh = dout_BTHD.shape
  dout_BKGTD = dout_BTHD.reshape(B, T, K, H // K, Dh).transpose(0, 2, 3, 1, 4)
  dq_BKGTD, dk_BKDS, dv_BKDS = _blocked_bwd(q_BKGTD, k_BKSD, v_BKSD, mask_B1TS, blocks, out_BKGTD,
                                            probs, inv_sums, dout_BKGTD)
  dq_BTHD = (dq_BKGTD * Dh ** -0.5).transpose(0, 3, 1, 2, 4).reshape(B, T, H, Dh)
  mask_ct = None if mask_B1TS is None else jnp.zeros(mask_B1TS.shape, jax.dtypes.float0)
  return (dq_BTHD.astype(q_BKGTD.dtype), dk_BKDS.transpose(0, 3, 1, 2).astype(k_BKSD.dtype),
          dv_BKDS.transpose(0, 3, 1, 2).astype(v_BKSD.dtype), mask_ct)


_blocked.defvjp(_blocked_with_residuals, _blocked_vjp_bwd)


def einsum_attention(q_BTHD, k_BSKD, v_BSKD, mask_B1TS=None, block_q: int = 64):
  """Head-major attention; causal self-attention skips the key blocks above the diagonal.

  `mask_B1TS`: None (causal), a boolean (B, 1, T, S) array, or an `ops.SegmentMask`.

  Queries are split into blocks of `block_q`; block i attends keys [0, (i+1)·block_q)
  only, so scores, softmax and all matmuls cost (n+1)/2n of the full T×T
  (10/16 at T=256, block 64). Each block's softmax is exact (it sees all of its
  keys), so no online rescaling is needed. Other shapes (T ≠ S, T not a
  multiple of block_q) run as one block over all keys.
  """
  mask_B1TS = ops.dense(mask_B1TS)
  T, S = q_BTHD.shape[1], k_BSKD.shape[1]
  if T != S or T <= block_q or T % block_q:
    blocks = ((0, T, S),)
  else:
    blocks = tuple((t0, t0 + block_q, t0 + block_q) for t0 in range(0, T, block_q))
  return _blocked(q_BTHD, k_BSKD, v_BSKD, mask_B1TS, k_BSKD.shape[2], blocks)


def _kernel_fwd_call(q_BTHD, k_BTKD, v_BTKD, starts_BT):
  B, T, H, _ = q_BTHD.shape
  out_types = (jax.ShapeDtypeStruct(q_BTHD.shape, _F32), jax.ShapeDtypeStruct((B, H, T), _F32))
  return jax.ffi.ffi_call("lm_causal_attention_fwd", out_types, vmap_method="sequential")(
      q_BTHD, k_BTKD, v_BTKD, starts_BT)


@jax.custom_vjp
def _kernel(q_BTHD, k_BTKD, v_BTKD, starts_BT):
  """starts_BT: each query's segment start (int32); zeros for plain causal attention."""
  return _kernel_fwd_call(q_BTHD, k_BTKD, v_BTKD, starts_BT)[0]


def _kernel_fwd(q_BTHD, k_BTKD, v_BTKD, starts_BT):
  out_BTHD, lse_BHT = _kernel_fwd_call(q_BTHD, k_BTKD, v_BTKD, starts_BT)
  return out_BTHD, (q_BTHD, k_BTKD, v_BTKD, starts_BT, out_BTHD, lse_BHT)


def _kernel_bwd(residuals, dout_BTHD):
  q_BTHD, k_BTKD, v_BTKD, starts_BT = residuals[:4]
  out_types = tuple(jax.ShapeDtypeStruct(x.shape, _F32) for x in (q_BTHD, k_BTKD, v_BTKD))
  dq, dk, dv = jax.ffi.ffi_call("lm_causal_attention_bwd", out_types, vmap_method="sequential")(
      *residuals, dout_BTHD)
  return dq, dk, dv, np.zeros(starts_BT.shape, jax.dtypes.float0)


_kernel.defvjp(_kernel_fwd, _kernel_bwd)


@functools.cache
def _warn_once(reason: str) -> None:
  logging.getLogger(__name__).warning("attention='cpu_kernel' runs 'einsum' instead: %s", reason)


def _kernel_unsupported(q_BTHD, k_BSKD, mask_B1TS) -> str | None:
  if mask_B1TS is not None and not isinstance(mask_B1TS, ops.SegmentMask):
    return "a dense mask was given (the kernel takes causal attention within contiguous segments only)"
  if q_BTHD.shape[1] != k_BSKD.shape[1]:
    return "queries and keys differ in length"
  return _kernel_unavailable(q_BTHD.dtype if k_BSKD.dtype == _F32 else k_BSKD.dtype)


def _kernel_unavailable(dtype) -> str | None:
  if dtype != _F32:
    return f"dtype {dtype} (the kernel is float32)"
  return cpu_kernels.unavailable_reason()


def resolved(impl: str, dtype) -> str:
  """What `attention(impl=...)` runs here for unmasked causal self-attention in `dtype`."""
  if impl != "cpu_kernel":
    return impl
  if jax.default_backend() != "cpu":
    return "auto"
  reason = _kernel_unavailable(jnp.dtype(dtype))
  return impl if reason is None else f"einsum (cpu_kernel unavailable: {reason})"


def _dividing_spec(logical_axes, shape, mesh) -> jax.sharding.PartitionSpec:
  """The mesh axes the rules give each dimension, dropping those that do not divide it evenly
  (e.g. a batch of 1 on 8 data shards: that dimension is then computed whole on every shard)."""
  spec = nn.logical_to_mesh_axes(logical_axes)
  def fits(axes, size):
    axes = (axes,) if isinstance(axes, str) else axes
    return size % math.prod(mesh.shape[a] for a in axes) == 0
  return jax.sharding.PartitionSpec(*(a if a is None or fits(a, n) else None for a, n in zip(spec, shape)))


def cpu_kernel_attention(q_BTHD, k_BTKD, v_BTKD, mask_B1TS=None):
  """Causal attention by the fused C++ kernel, sharded like the model's activations.

  Packed rows (`ops.SegmentMask`) pass only their segment starts to the kernel.

  Under a mesh the kernel runs per shard (`jax.shard_map`): batch over the data
  axes, heads over the tensor axis, as the logical rules place q/k/v.
  """
  if jax.default_backend() != "cpu":
    return ops.xla_attention(q_BTHD, k_BTKD, v_BTKD, mask_B1TS, impl="auto")
  reason = _kernel_unsupported(q_BTHD, k_BTKD, mask_B1TS)
  B, T = q_BTHD.shape[:2]
  starts_BT = (mask_B1TS.starts_BT.astype(jnp.int32) if isinstance(mask_B1TS, ops.SegmentMask)
               else jnp.zeros((B, T), jnp.int32))
  mesh = jax.sharding.get_abstract_mesh()
  if reason is None and not mesh.empty and mesh.size > 1:
    q_spec = _dividing_spec(("batch", "length", "act_heads", None), q_BTHD.shape, mesh)
    kv_spec = _dividing_spec(("batch", "length", "act_kv_heads", None), k_BTKD.shape, mesh)
    if q_spec[1] is not None:
      reason = f"the sequence axis is sharded ({q_spec[1]})"
    elif kv_spec[2] != q_spec[2]:  # each shard's query heads must find their kv heads locally
      reason = f"query heads ({q_spec[2]}) and key/value heads ({kv_spec[2]}) are sharded differently"
    else:
      # Purely per shard (no collectives); the FFI results carry no varying-axes types to check.
      starts_spec = jax.sharding.PartitionSpec(q_spec[0], None)
      fn = jax.shard_map(_kernel, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, starts_spec),
                         out_specs=q_spec, check_vma=False)
      return fn(q_BTHD, k_BTKD, v_BTKD, starts_BT)
  if reason is not None:
    _warn_once(reason)
    return einsum_attention(q_BTHD, k_BTKD, v_BTKD, mask_B1TS)
  return _kernel(q_BTHD, k_BTKD, v_BTKD, starts_BT)
