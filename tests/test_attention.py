"""Attention implementations agree: the causal-blocked einsum path against jax.nn.dot_product_attention."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import attention
from lm import model as model_lib


def assert_same_gradients(f, ref, q, k, v, weights):
  """Gradients of Σ f(q, k, v)·weights w.r.t. q, k and v agree with ref's."""
  loss = lambda g: lambda *a: (g(*a) * weights).sum()
  got = jax.jit(jax.grad(loss(f), argnums=(0, 1, 2)))(q, k, v)
  want = jax.jit(jax.grad(loss(ref), argnums=(0, 1, 2)))(q, k, v)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, atol=2e-4)


def qkv(B, T, H, K, Dh, seed=0):
  kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(kq, (B, T, H, Dh)), jax.random.normal(kk, (B, T, K, Dh)),
          jax.random.normal(kv, (B, T, K, Dh)))


@pytest.mark.parametrize("T,H,K,block_q", [(64, 4, 4, 16), (64, 4, 2, 16), (48, 2, 1, 16),
                                           (40, 4, 4, 16), (16, 4, 4, 64)])
def test_einsum_matches_xla_values_and_gradients(T, H, K, block_q):
  """Block-skipping (T a multiple of block_q) and the full-T fallback (T=40, T < block_q), MHA and GQA."""
  q, k, v = qkv(2, T, H, K, 8)
  ein = functools.partial(attention.einsum_attention, block_q=block_q)
  ref = functools.partial(attention.attention, impl="xla")
  np.testing.assert_allclose(jax.jit(ein)(q, k, v), jax.jit(ref)(q, k, v), atol=2e-5)
  assert_same_gradients(ein, ref, q, k, v, jnp.arange(8))


def test_einsum_with_document_mask_matches_xla():
  """Packed documents: the blocked path slices the (causal ∧ same-document) mask per block."""
  q, k, v = qkv(2, 64, 4, 2, 8, seed=1)
  seg = jnp.asarray([[1] * 20 + [2] * 30 + [3] * 14, [1] * 64])
  mask = model_lib.attention_mask(seg, 64)
  ein = functools.partial(attention.einsum_attention, block_q=16)
  ref = functools.partial(attention.attention, impl="xla")
  np.testing.assert_allclose(jax.jit(ein)(q, k, v, mask), jax.jit(ref)(q, k, v, mask), atol=2e-5)
  assert_same_gradients(lambda *a: ein(*a, mask), lambda *a: ref(*a, mask), q, k, v, jnp.arange(8))


def test_einsum_bfloat16_close_to_float32():
  """bfloat16 inputs: probabilities in bfloat16, softmax statistics and accumulation in float32."""
  q, k, v = qkv(2, 64, 4, 2, 16, seed=2)
  f = jax.jit(jax.value_and_grad(lambda q, k, v: (attention.einsum_attention(q, k, v, block_q=16) ** 2).sum(),
                                 argnums=(0, 1, 2)))
  (l32, g32), (l16, g16) = f(q, k, v), f(*(x.astype(jnp.bfloat16) for x in (q, k, v)))
  assert g16[0].dtype == jnp.bfloat16
  np.testing.assert_allclose(float(l16), float(l32), rtol=2e-2)
  for a, b in zip(g16, g32):
    np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=0.1 * float(jnp.abs(b).max()))


def test_einsum_block_skipping_does_less_work():
  """The blocked path's compiled FLOPs are ~(n+1)/2n of the full T×T path's (n = T / block_q)."""
  q, k, v = qkv(2, 256, 4, 4, 64)
  def flops(block_q):
    f = jax.jit(functools.partial(attention.einsum_attention, block_q=block_q))
    return f.lower(q, k, v).compile().cost_analysis()["flops"]
  ratio = flops(64) / flops(256)
  assert 0.55 < ratio < 0.7, ratio  # 10/16 = 0.625 of the matmul FLOPs
