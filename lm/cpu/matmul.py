"""The weight matmul 'copy_transpose' (`model.weight_grad`): x·W with a backward pass that suits XLA:CPU.

`copy_transpose(x, w, n_in)` contracts the last `n_in` axes of x with the
first `n_in` axes of w, like the core's `lm.ops.contract`, but its backward is written out so that every
matmul in it is a plain row-major [M,K]·[K,N] product. Autodiff's weight
gradient dW = xᵀ·g contracts the leading (batch × length) axis of both
operands; XLA:CPU's fast matmul library (YNNPACK) does not take that layout, so
XLA falls back to an Eigen contraction that runs on its own thread pool, slower
on its own and competing for the cores with the YNNPACK matmuls scheduled
beside it. Copying the smaller of x and g into a transposed buffer first
(M·min(I, O) floats) puts the product back on YNNPACK. Optimization
barriers keep XLA's algebraic simplifier from folding the transposes back into
the dot. On the CPU benchmark this halves the MLP's forward+backward time
(README, Benchmarks). Accelerators contract transposed operands natively:
keep 'xla' there.
"""
from __future__ import annotations

import functools
import math

import jax

from lm.ops import contract as _contract


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _dense_copy_transpose(x, w, n_in: int):
  return _contract(x, w, n_in)


def _fwd(x, w, n_in):
  return _contract(x, w, n_in), (x, w)


def _bwd(n_in, residuals, g):
  x, w = residuals
  lead = x.ndim - n_in
  # dx = g · wᵀ over the output axes: w is small, XLA transposes it on its own.
  dx = jax.lax.dot_general(g, w, ((tuple(range(lead, g.ndim)), tuple(range(n_in, w.ndim))), ((), ())))
  fan_in, fan_out = math.prod(w.shape[:n_in]), math.prod(w.shape[n_in:])
  x_MI, g_MO = x.reshape(-1, fan_in), g.reshape(-1, fan_out)
  barrier = jax.lax.optimization_barrier
  # The products are fenced too: XLA would fold a transpose that follows them
  # (ours below, or the caller's, e.g. the tied LM head's Eᵀ) back into the dot.
  if fan_in <= fan_out:
    dw_IO = barrier(barrier(x_MI.T) @ g_MO)
  else:
    dw_IO = barrier(barrier(g_MO.T) @ x_MI).T
  return dx.astype(x.dtype), dw_IO.reshape(w.shape).astype(w.dtype)


_dense_copy_transpose.defvjp(_fwd, _bwd)


def copy_transpose(x: jax.Array, w: jax.Array, n_in: int = 1) -> jax.Array:
  """x[..., *in] · w[*in, *out] → [..., *out]; off the CPU, plain autodiff (accelerators
  contract transposed operands natively)."""
  if jax.default_backend() != "cpu":
    return _contract(x, w, n_in)
  return _dense_copy_transpose(x, w, n_in)
