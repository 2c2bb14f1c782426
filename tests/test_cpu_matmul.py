"""lm/cpu/matmul.py: the hand-written weight-gradient path = autodiff, and it keeps XLA:CPU's matmuls on YNNPACK."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from lm import ops
from tests.conftest import CPU_SPEEDUPS

pytestmark = pytest.mark.skipif(not CPU_SPEEDUPS, reason="CPU speed-ups switched off (LM_CPU_SPEEDUPS=0)")
from lm import model as model_lib


@pytest.mark.parametrize("x_shape,w_shape,n_in", [
    ((2, 8, 16), (16, 48), 1),      # fan_in < fan_out: x is transposed
    ((2, 8, 48), (48, 16), 1),      # fan_in > fan_out: g is transposed
    ((2, 8, 4, 6), (4, 6, 16), 2),  # attention output projection: (heads, head_dim) → embed
    ((2, 8, 16), (16, 4, 6), 1),    # query projection: embed → (heads, head_dim)
])
def test_copy_transpose_matches_autodiff(x_shape, w_shape, n_in):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
  w = jnp.asarray(rng.standard_normal(w_shape), jnp.float32)
  probe = jnp.asarray(rng.standard_normal(x_shape[:len(x_shape) - n_in] + w_shape[n_in:]), jnp.float32)

  def loss(x, w, mode):
    return jnp.sum(jnp.tanh(ops.matmul(x, w, n_in, mode)) * probe)

  want = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)(x, w, "xla")
  got = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)), static_argnums=2)(x, w, "copy_transpose")
  np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
  for g, r in zip(got[1], want[1]):
    assert g.shape == r.shape and g.dtype == r.dtype
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


def test_bfloat16_gradients_stay_bfloat16():
  x = jnp.ones((4, 8), jnp.bfloat16)
  w = jnp.ones((8, 3), jnp.bfloat16)
  dx, dw = jax.grad(lambda x, w: ops.matmul(x, w, 1, "copy_transpose").astype(jnp.float32).sum(),
                    argnums=(0, 1))(x, w)
  assert dx.dtype == dw.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(dw, np.float32), 4.0)


def _entry_dots(fn, *args) -> int:
  """Dots XLA:CPU left outside YNNPACK fusions (each one an Eigen contraction)."""
  hlo = jax.jit(fn).lower(*args).compile().as_text()
  return hlo[hlo.rindex("ENTRY"):].count(" dot(")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="about XLA:CPU's matmul libraries")
def test_mlp_backward_has_no_eigen_dots():
  """Why the path exists: autodiff's xᵀ·g leaves Eigen dots in the step, copy_transpose leaves none."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((4, 64, 32)), jnp.float32)
  w_up = jnp.asarray(rng.standard_normal((32, 128)), jnp.float32)
  w_down = jnp.asarray(rng.standard_normal((128, 32)), jnp.float32)

  def mlp_grads(mode):
    def loss(x, w_up, w_down):
      h = jax.nn.gelu(ops.matmul(x, w_up, 1, mode))
      return jnp.sum(ops.matmul(h, w_down, 1, mode) ** 2)
    return jax.grad(loss, argnums=(0, 1, 2))

  assert _entry_dots(mlp_grads("copy_transpose"), x, w_up, w_down) == 0
  assert _entry_dots(mlp_grads("xla"), x, w_up, w_down) > 0


@pytest.mark.parametrize("preset", ["tiny", "llama_tiny"])
def test_model_gradients_match_autodiff(preset):
  """Whole model, tied (GPT-2) and untied (Llama) heads: same loss and parameter gradients."""
  cfg = base.model_config(preset)
  cfg.update(vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=16)
  cfg.n_kv_heads = 2 if preset == "llama_tiny" else 4
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 16)), jnp.int32)
  results = []
  for mode in ("xla", "copy_transpose"):
    cfg.weight_grad = mode
    model = model_lib.build(cfg)
    params = model.init(jax.random.key(0), tokens)["params"]

    def loss(params):
      logits = model.apply({"params": params}, tokens)
      return -jnp.mean(jax.nn.log_softmax(logits)[:, :-1].max(-1))
    results.append(jax.jit(jax.value_and_grad(loss))(params))
  (want_loss, want_grads), (got_loss, got_grads) = results
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-6)
  for g, r in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6)
