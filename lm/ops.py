"""The model's two swappable operations, looked up by name: attention and the weight matmul.

The core implements what every backend runs well:

  attention       xla | cudnn | auto   `jax.nn.dot_product_attention` (cudnn: the fused
                                       flash kernel on NVIDIA GPUs; auto: XLA picks)
  weight matmul   xla                  `lax.dot_general`, gradients by autodiff

Optional packages register more under their own names. `lm.cpu` (CPU speed-ups,
not imported by the core) adds attention 'einsum' and 'cpu_kernel' and the weight
matmul 'copy_transpose'. A config that names an optional implementation still
runs where it is not registered (the package switched off, or a library user who
never imported it): the core default runs instead, with one warning that says so.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable, NamedTuple

import jax

CORE_ATTENTION = ("xla", "cudnn", "auto")
CORE_MATMUL = ("xla",)
# Names a config may use that an optional package provides: name → package.
OPTIONAL = {"einsum": "lm.cpu", "cpu_kernel": "lm.cpu", "copy_transpose": "lm.cpu"}
ATTENTION_NAMES = CORE_ATTENTION + ("einsum", "cpu_kernel")
MATMUL_NAMES = CORE_MATMUL + ("copy_transpose",)


class SegmentMask(NamedTuple):
  """Causal attention inside packed segments (documents, conversations laid end to end).

  dense_B1TT: True where a query may attend a key (what the core implementations use).
  starts_BT: the first position of each query's segment (segments are contiguous runs),
             for kernels that skip the keys before it instead of reading a (T, T) mask.
  """
  dense_B1TT: jax.Array
  starts_BT: jax.Array


def dense(mask):
  """The boolean (B, 1, T, S) array of a mask (or None for plain causal)."""
  return mask.dense_B1TT if isinstance(mask, SegmentMask) else mask


_attention: dict[str, Callable] = {}
_matmul: dict[str, Callable] = {}
_describe: dict[str, Callable] = {}


def register_attention(name: str, fn: Callable, describe: Callable | None = None) -> None:
  """fn(q_BTHD, k_BSKD, v_BSKD, mask) → out_BTHD, mask None (causal), a boolean (B, 1, T, S)
  array or a SegmentMask; describe(dtype) → what runs."""
  _attention[name] = fn
  if describe is not None:
    _describe[name] = describe


def register_matmul(name: str, fn: Callable) -> None:
  """fn(x, w, n_in) → x·w contracting the last n_in axes of x with the first n_in of w."""
  _matmul[name] = fn


@functools.cache
def _fallback_warning(kind: str, name: str, instead: str) -> None:
  logging.getLogger(__name__).warning(
      "%s %r is provided by %s, which is not enabled in this process (LM_CPU_SPEEDUPS=0, "
      "another backend, or never registered): running %r", kind, name, OPTIONAL.get(name, "?"), instead)


def xla_attention(q_BTHD, k_BSKD, v_BSKD, mask_B1TS=None, *, impl: str = "xla"):
  """`mask_B1TS` True where a query may attend a key; None means causal (T == S)."""
  implementation = None if impl == "auto" else impl
  mask_B1TS = dense(mask_B1TS)
  if mask_B1TS is None:
    return jax.nn.dot_product_attention(q_BTHD, k_BSKD, v_BSKD, is_causal=True,
                                        implementation=implementation)
  return jax.nn.dot_product_attention(q_BTHD, k_BSKD, v_BSKD, mask=mask_B1TS,
                                      implementation=implementation)


def attention(q_BTHD, k_BSKD, v_BSKD, mask_B1TS=None, *, impl: str = "xla"):
  """Grouped-query attention by name: H query heads share K key/value heads."""
  if impl in CORE_ATTENTION:
    return xla_attention(q_BTHD, k_BSKD, v_BSKD, mask_B1TS, impl=impl)
  if impl in _attention:
    return _attention[impl](q_BTHD, k_BSKD, v_BSKD, mask_B1TS)
  _fallback_warning("attention", impl, "auto")
  return xla_attention(q_BTHD, k_BSKD, v_BSKD, mask_B1TS, impl="auto")


def describe_attention(impl: str, dtype) -> str:
  """What `attention(impl=...)` runs in this process for causal self-attention in `dtype`."""
  if impl in CORE_ATTENTION:
    return impl
  if impl in _describe:
    return _describe[impl](dtype)
  return impl if impl in _attention else f"auto ({impl} not registered)"


def describe_matmul(impl: str) -> str:
  """What `matmul(impl=...)` runs in this process."""
  return impl if impl in CORE_MATMUL or impl in _matmul else "xla"


def contract(x: jax.Array, w: jax.Array, n_in: int = 1) -> jax.Array:
  x_dims = tuple(range(x.ndim - n_in, x.ndim))
  return jax.lax.dot_general(x, w, ((x_dims, tuple(range(n_in))), ((), ())))


def matmul(x: jax.Array, w: jax.Array, n_in: int = 1, impl: str = "xla") -> jax.Array:
  """x[..., *in] · w[*in, *out] → [..., *out] by the named weight-matmul implementation."""
  if impl in CORE_MATMUL:
    return contract(x, w, n_in)
  if impl in _matmul:
    return _matmul[impl](x, w, n_in)
  _fallback_warning("weight matmul", impl, "xla")
  return contract(x, w, n_in)
