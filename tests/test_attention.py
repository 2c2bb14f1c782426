"""The CPU package's attention (lm/cpu/attention.py: causal-blocked einsum, the C++ kernel) against
jax.nn.dot_product_attention."""
import functools
import logging
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from configs import base
from lm import model as model_lib
from lm import ops
from lm import sharding
from lm.cpu import attention
from lm.cpu import build as cpu_kernels
from tests.conftest import CPU_SPEEDUPS, require_kernel

pytestmark = pytest.mark.skipif(not CPU_SPEEDUPS, reason="CPU speed-ups switched off (LM_CPU_SPEEDUPS=0)")


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
  ref = functools.partial(ops.attention, impl="xla")
  np.testing.assert_allclose(jax.jit(ein)(q, k, v), jax.jit(ref)(q, k, v), atol=2e-5)
  assert_same_gradients(ein, ref, q, k, v, jnp.arange(8))


def test_einsum_with_document_mask_matches_xla():
  """Packed documents: the blocked path slices the (causal ∧ same-document) mask per block."""
  q, k, v = qkv(2, 64, 4, 2, 8, seed=1)
  seg = jnp.asarray([[1] * 20 + [2] * 30 + [3] * 14, [1] * 64])
  mask = model_lib.attention_mask(seg, 64)
  ein = functools.partial(attention.einsum_attention, block_q=16)
  ref = functools.partial(ops.attention, impl="xla")
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


@pytest.fixture
def kernel():
  require_kernel()


def uses_kernel(f, *args) -> bool:
  return "lm_causal_attention_fwd" in jax.jit(f).lower(*args).as_text()


@pytest.mark.parametrize("B,T,H,K,Dh", [(2, 64, 4, 4, 16), (2, 200, 4, 2, 24), (1, 16, 2, 1, 8),
                                        (2, 130, 6, 3, 40), (1, 256, 2, 2, 64)])
def test_cpu_kernel_matches_xla_values_and_gradients(kernel, B, T, H, K, Dh):
  """Whole and partial 64-row query blocks, head widths off the vector width, MHA and GQA."""
  q, k, v = qkv(B, T, H, K, Dh, seed=T)
  ker = functools.partial(ops.attention, impl="cpu_kernel")
  ref = functools.partial(ops.attention, impl="xla")
  assert uses_kernel(ker, q, k, v)
  np.testing.assert_allclose(jax.jit(ker)(q, k, v), jax.jit(ref)(q, k, v), atol=2e-5)
  assert_same_gradients(ker, ref, q, k, v, jnp.arange(Dh))


def test_cpu_kernel_sharded_matches_one_device(kernel):
  """Under data × fsdp × tensor the kernel runs per shard (batch and heads split) with the same result."""
  q, k, v = qkv(4, 96, 4, 2, 16, seed=3)
  weights = jax.random.normal(jax.random.key(4), q.shape)
  f = jax.jit(jax.value_and_grad(
      lambda q, k, v: (ops.attention(q, k, v, impl="cpu_kernel") * weights).sum(), argnums=(0, 1, 2)))
  want = f(q, k, v)
  mesh = sharding.make_mesh(base.mesh_config(data=2, fsdp=2, tensor=2))
  rules = base.SHARDING_RULES
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    q_sh = sharding.logical_to_shardings(P("batch", "length", "act_heads", None), mesh, rules)
    kv_sh = sharding.logical_to_shardings(P("batch", "length", "act_kv_heads", None), mesh, rules)
    args = (jax.device_put(q, q_sh), jax.device_put(k, kv_sh), jax.device_put(v, kv_sh))
    hlo = f.lower(*args).as_text()
    got = f(*args)
  assert "lm_causal_attention_fwd" in hlo and "lm_causal_attention_bwd" in hlo
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  for a, b in zip(got[1], want[1]):
    np.testing.assert_allclose(a, b, atol=1e-5)
  assert got[1][0].sharding.shard_shape(q.shape) == (1, 96, 2, 16)  # batch over data·fsdp, heads over tensor


def segments(B, T, seed):
  """Packed rows: contiguous segments of random lengths, then padding (segment 0) at the end."""
  rng = np.random.default_rng(seed)
  rows = []
  for _ in range(B):
    ids, n = [], 1
    while len(ids) < T - 7:
      ids += [n] * int(rng.integers(1, 70))
      n += 1
    rows.append((ids[:T - 7] + [0] * 7))
  return jnp.asarray(rows, jnp.int32)


@pytest.mark.parametrize("B,T,H,K,Dh", [(2, 200, 4, 2, 24), (3, 64, 2, 2, 16), (1, 130, 4, 1, 40)])
def test_cpu_kernel_packed_segments_match_xla_with_the_dense_mask(kernel, B, T, H, K, Dh):
  """Packed rows: the kernel reads only the segment starts and skips the keys before them;
  values and gradients equal dense-masked attention."""
  q, k, v = qkv(B, T, H, K, Dh, seed=T + 1)
  mask = model_lib.attention_mask(segments(B, T, seed=T), T)
  ker = functools.partial(ops.attention, impl="cpu_kernel")
  ref = functools.partial(ops.attention, impl="xla")
  assert uses_kernel(ker, q, k, v, mask)
  np.testing.assert_allclose(jax.jit(ker)(q, k, v, mask), jax.jit(ref)(q, k, v, mask), atol=2e-5)
  assert_same_gradients(lambda *a: ker(*a, mask), lambda *a: ref(*a, mask), q, k, v, jnp.arange(Dh))


def test_cpu_kernel_packed_segments_sharded(kernel):
  q, k, v = qkv(4, 64, 4, 2, 16, seed=8)
  mask = model_lib.attention_mask(segments(4, 64, seed=9), 64)
  f = jax.jit(lambda q, k, v, m: ops.attention(q, k, v, m, impl="cpu_kernel"))
  want = f(q, k, v, mask)
  mesh = sharding.make_mesh(base.mesh_config(data=2, fsdp=2, tensor=2))
  with jax.set_mesh(mesh), nn.logical_axis_rules(base.SHARDING_RULES):
    assert "lm_causal_attention_fwd" in f.lower(q, k, v, mask).as_text()
    got = f(q, k, v, mask)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_cpu_kernel_routes_what_it_does_not_cover_to_einsum(kernel, caplog):
  """A dense mask or bfloat16 takes the einsum path (same numbers), with a logged reason."""
  q, k, v = qkv(2, 64, 4, 2, 8, seed=5)
  mask = ops.dense(model_lib.attention_mask(jnp.asarray([[1] * 30 + [2] * 34] * 2), 64))
  ker = functools.partial(ops.attention, impl="cpu_kernel")
  with caplog.at_level(logging.WARNING, logger="lm.cpu.attention"):
    assert not uses_kernel(ker, q, k, v, mask)
    assert not uses_kernel(ker, *(x.astype(jnp.bfloat16) for x in (q, k, v)))
  assert "a dense mask was given" in caplog.text and "bfloat16" in caplog.text
  np.testing.assert_allclose(jax.jit(ker)(q, k, v, mask), attention.einsum_attention(q, k, v, mask), atol=1e-6)


def test_cpu_kernel_without_compiler_falls_back(monkeypatch, tmp_path):
  """No C++ compiler: the build names the missing compiler and attention still runs (einsum)."""
  monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++"))
  monkeypatch.setenv("LM_KERNEL_CACHE", str(tmp_path / "cache"))
  with pytest.raises(cpu_kernels.NoCompiler, match="no C.. compiler.*no-such-c"):
    cpu_kernels.build()
  monkeypatch.setattr(cpu_kernels, "unavailable_reason", lambda: "no C++ compiler")
  q, k, v = qkv(1, 64, 2, 2, 8)
  ker = functools.partial(ops.attention, impl="cpu_kernel")
  assert not uses_kernel(ker, q, k, v)
  np.testing.assert_allclose(jax.jit(ker)(q, k, v), ops.attention(q, k, v, impl="xla"), atol=2e-5)


def test_cpu_kernel_build_is_cached(kernel, monkeypatch, tmp_path):
  """The shared library is built once per source/compiler/CPU into the cache, then reused."""
  monkeypatch.setenv("LM_KERNEL_CACHE", str(tmp_path))
  first = cpu_kernels.build()
  mtime = first.stat().st_mtime_ns
  assert cpu_kernels.build() == first and first.stat().st_mtime_ns == mtime
  assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary build folder left


def test_a_broken_kernel_source_fails_instead_of_skipping(kernel, tmp_path, monkeypatch):
  """A syntax error in the kernel is a build error (which fails the kernel tests), not a missing compiler."""
  broken = tmp_path / "attention_cpu.cc"
  broken.write_text(cpu_kernels._SOURCE.read_text().replace("{", "{ this is not C++;", 1))
  with pytest.raises(cpu_kernels.BuildError, match="failed"):
    cpu_kernels.build(broken, cache=tmp_path / "cache")
  # With a compiler present, an unavailable kernel fails the kernel tests; without one they skip.
  monkeypatch.setattr(cpu_kernels, "unavailable_reason", lambda: "could not build attention_cpu.cc: error")
  with pytest.raises(pytest.fail.Exception, match="did not build"):
    require_kernel()
  monkeypatch.setattr(cpu_kernels, "compiler", lambda: None)
  with pytest.raises(pytest.skip.Exception, match="no C.. compiler"):
    require_kernel()


@pytest.mark.parametrize("isa", ["-mno-avx512f", "-march=x86-64"])
def test_cpu_kernel_without_avx512(kernel, isa, tmp_path):
  """The 8-lane build (AVX2 or plain SSE machines) computes the same values and gradients."""
  import platform
  import subprocess
  import sys
  if platform.machine() not in ("x86_64", "AMD64"):
    pytest.skip("x86 instruction-set flags")
  code = """
import jax, jax.numpy as jnp, numpy as np
from lm import ops
from lm import cpu as cpu_package
from lm.cpu import build as cpu
cpu_package.register()
assert cpu.unavailable_reason() is None, cpu.unavailable_reason()
ks = jax.random.split(jax.random.key(0), 3)
q = jax.random.normal(ks[0], (2, 100, 4, 24)); k, v = (jax.random.normal(x, (2, 100, 2, 24)) for x in ks[1:])
def grads(impl):
  return jax.jit(jax.value_and_grad(lambda *a: (ops.attention(*a, impl=impl) ** 2).sum(), (0, 1, 2)))(q, k, v)
(l1, g1), (l2, g2) = grads("cpu_kernel"), grads("xla")
np.testing.assert_allclose(l1, l2, rtol=1e-5)
for a, b in zip(g1, g2):
  np.testing.assert_allclose(a, b, atol=2e-4)
print("ok")
"""
  env = dict(os.environ, LM_KERNEL_CFLAGS=isa, LM_KERNEL_CACHE=str(tmp_path), XLA_FLAGS="")
  proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=300)
  assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
  assert len(list(tmp_path.glob("attention_cpu-*.so"))) == 1


def test_cpu_kernel_batch_smaller_than_data_axis(kernel):
  """A batch of 1 on 8 data shards (decoding, evaluation): the batch dimension is computed whole."""
  q, k, v = qkv(1, 24, 4, 4, 16, seed=6)
  mesh = sharding.make_mesh(base.mesh_config(data=4, tensor=2))
  f = jax.jit(functools.partial(ops.attention, impl="cpu_kernel"))
  with jax.set_mesh(mesh), nn.logical_axis_rules(base.SHARDING_RULES):
    assert "lm_causal_attention_fwd" in f.lower(q, k, v).as_text()
    got = f(q, k, v)
  np.testing.assert_allclose(got, ops.attention(q, k, v, impl="xla"), atol=2e-5)
