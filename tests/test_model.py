"""The transformer: shapes, causality, scan/remat equivalence, document masking, config errors."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import model as model_lib


def init(cfg, B=2, T=16, seed=0):
  model = model_lib.build(cfg)
  tokens = jax.random.randint(jax.random.key(seed), (B, T), 0, cfg.vocab_size)
  params = nn.meta.unbox(model.init(jax.random.key(1), tokens)["params"])
  return model, params, tokens


@pytest.mark.parametrize("family", ["tiny_model_config", "tiny_llama_config"])
def test_logits_shape_and_dtype(family, request):
  cfg = request.getfixturevalue(family)
  model, params, tokens = init(cfg)
  logits = model.apply({"params": params}, tokens)
  assert logits.shape == (2, 16, cfg.vocab_size) and logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()


@pytest.mark.parametrize("family", ["tiny_model_config", "tiny_llama_config"])
def test_no_gradient_from_future_tokens(family, request):
  """d logits[t] / d input[s] is exactly zero for every s > t, and not zero for s ≤ t."""
  cfg = request.getfixturevalue(family)
  model, params, tokens = init(cfg, B=1, T=12)
  variables = model.init(jax.random.key(1), tokens)
  perturb = variables["perturbations"]

  for t in (0, 5, 11):
    def logit_sum(perturbations):
      return model.apply({"params": params, "perturbations": perturbations}, tokens)[0, t].sum()
    g_TD = np.asarray(jax.grad(logit_sum)(perturb)["embedded"][0])
    assert np.all(g_TD[t + 1:] == 0.0), f"position {t} sees the future"
    assert np.all(np.abs(g_TD[:t + 1]).sum(-1) > 0), f"position {t} ignores its past"


def test_document_mask_isolates_packed_documents(tiny_llama_config):
  """With segment ids, a document's logits do not depend on the document before it."""
  model, params, tokens = init(tiny_llama_config, B=1, T=12)
  seg = jnp.asarray([[1] * 5 + [2] * 7])
  pos = jnp.asarray([list(range(5)) + list(range(7))])
  full = model.apply({"params": params}, tokens, pos, seg)[0, 5:]
  alone = model.apply({"params": params}, tokens[:, 5:])[0]
  np.testing.assert_allclose(np.asarray(full), np.asarray(alone), atol=1e-5)


def _stack_layers(params, n_layers):
  params = dict(params)
  layers = [params.pop(f"layer_{i}") for i in range(n_layers)]
  return dict(params, layers=jax.tree.map(lambda *xs: jnp.stack(xs), *layers))


@pytest.mark.parametrize("remat", ["none", "full", "dots", "dots_no_batch"])
def test_scan_and_remat_match_unrolled(tiny_llama_config, remat):
  """Same logits and the same parameter gradients as the unrolled, unrematerialised model
  (remat recomputes the forward inside the backward, so only the gradients can tell it broke)."""
  cfg = tiny_llama_config
  model, params, tokens = init(cfg)
  targets = jax.random.randint(jax.random.key(7), tokens.shape, 0, cfg.vocab_size)

  def loss(m):
    def f(p):
      logp = jax.nn.log_softmax(m.apply({"params": p}, tokens))
      return -jnp.take_along_axis(logp, targets[..., None], -1).mean()
    return f

  scanned_cfg = cfg.copy_and_resolve_references()
  scanned_cfg.update(scan_layers=True, remat=remat)
  scanned = model_lib.build(scanned_cfg)
  stacked = _stack_layers(params, cfg.n_layers)
  np.testing.assert_allclose(np.asarray(scanned.apply({"params": stacked}, tokens)),
                             np.asarray(model.apply({"params": params}, tokens)), atol=1e-5)
  want = _stack_layers(jax.grad(loss(model))(params), cfg.n_layers)
  got = jax.grad(loss(scanned))(stacked)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for path, g in jax.tree_util.tree_flatten_with_path(got)[0]:
    w = _at(want, path)
    assert np.abs(np.asarray(w)).max() > 0, jax.tree_util.keystr(path)
    np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-7,
                               err_msg=jax.tree_util.keystr(path))


def _at(tree, path):
  for k in path:
    tree = tree[k.key]
  return tree


def test_bfloat16_compute_keeps_float32_params(tiny_model_config):
  """bf16 logits within a few percent of the float32 logits' spread (bf16 keeps ~3 significant
  digits), and not equal to them (the bf16 path really ran)."""
  cfg = tiny_model_config
  cfg.dtype = "bfloat16"
  model, params, tokens = init(cfg)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  ref_cfg = cfg.copy_and_resolve_references()
  ref_cfg.dtype = "float32"
  a = model.apply({"params": params}, tokens)
  b = np.asarray(model_lib.build(ref_cfg).apply({"params": params}, tokens))
  assert a.dtype == jnp.float32
  err, spread = np.abs(np.asarray(a) - b), b.std()
  assert 0 < err.max() <= 0.05 * spread, (err.max(), spread)
  assert err.mean() <= 0.01 * spread, (err.mean(), spread)


def test_every_parameter_has_logical_axes(tiny_llama_config):
  model = model_lib.build(tiny_llama_config)
  boxed = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
  specs = nn.get_partition_spec(boxed)
  leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  shapes = jax.tree.leaves(nn.meta.unbox(boxed))
  assert len(leaves) == len(shapes)
  for spec, shape in zip(leaves, shapes):
    assert len(spec) == len(shape.shape), (spec, shape)


@pytest.mark.parametrize("key,value,message", [
    ("n_kv_heads", 3, "config.model.n_kv_heads"),
    ("positions", "alibi", "config.model.positions"),
    ("remat", "sometimes", "config.model.remat"),
    ("weight_grad", "transpose", "config.model.weight_grad"),
])
def test_bad_model_config_names_the_key(tiny_llama_config, key, value, message):
  tiny_llama_config[key] = value
  with pytest.raises(ValueError, match=message):
    model_lib.build(tiny_llama_config)


def test_flops_per_token_counts_matmul_weights(tiny_model_config):
  cfg = tiny_model_config
  model, params, _ = init(cfg)
  n = model_lib.num_params(params)
  D, L, T = cfg.d_model, cfg.n_layers, 16
  # GPT-2 params minus positions, biases and norms = the matmul weights (tied head counted once).
  biases_and_norms = sum(x.size for path, x in jax.tree_util.tree_flatten_with_path(params)[0]
                         if "bias" in jax.tree_util.keystr(path) or "scale" in jax.tree_util.keystr(path))
  matmul = n - cfg.max_len * D - biases_and_norms
  assert model_lib.flops_per_token(cfg, T) == 6 * matmul + 12 * L * D * T


def _smeared(cfg, B=2, T=16):
  """A model with smear_keys whose per-head shares differ (not the 0.5 of the init)."""
  cfg = cfg.copy_and_resolve_references()
  cfg.smear_keys = True
  model, params, tokens = init(cfg, B, T)
  for i in range(cfg.n_layers):
    K = params[f"layer_{i}"]["attn"]["smear"].shape[0]
    params[f"layer_{i}"]["attn"]["smear"] = jnp.linspace(-2.0, 2.0, K) + i
  return cfg, model, params, tokens


@pytest.mark.parametrize("family", ["tiny_model_config", "tiny_llama_config"])
def test_smeared_keys_are_causal_and_keep_packed_documents_apart(family, request):
  cfg, model, params, tokens = _smeared(request.getfixturevalue(family), B=1, T=12)
  assert params["layer_0"]["attn"]["smear"].shape == (cfg.n_kv_heads,)
  variables = model.init(jax.random.key(1), tokens)
  for t in (0, 5, 11):
    g = jax.grad(lambda pert: model.apply({"params": params, "perturbations": pert}, tokens)[0, t].sum())
    g_TD = np.asarray(g(variables["perturbations"])["embedded"][0])
    assert np.all(g_TD[t + 1:] == 0.0) and np.all(np.abs(g_TD[:t + 1]).sum(-1) > 0)
  seg = jnp.asarray([[1] * 5 + [2] * 7])
  pos = jnp.asarray([list(range(5)) + list(range(7))])
  full = model.apply({"params": params}, tokens, pos, seg)[0, 5:]
  alone = model.apply({"params": params}, tokens[:, 5:])[0]
  np.testing.assert_allclose(np.asarray(full), np.asarray(alone), atol=1e-5)
  # The keys are smeared: the same weights without the option give other logits.
  plain_cfg = cfg.copy_and_resolve_references()
  plain_cfg.smear_keys = False
  plain = model_lib.build(plain_cfg)
  plain_params = {k: ({**v, "attn": {n: w for n, w in v["attn"].items() if n != "smear"}}
                      if k.startswith("layer_") else v) for k, v in params.items()}
  assert np.abs(np.asarray(plain.apply({"params": plain_params}, tokens))
                - np.asarray(model.apply({"params": params}, tokens))).max() > 1e-4  # ~100× float noise


@pytest.mark.parametrize("scan_layers", [False, True])
def test_smeared_keys_decode_from_the_cache_as_the_full_forward(tiny_llama_config, scan_layers):
  """Left-padded prompts, a prefill and one token at a time (the sampler's and engine's path):
  every row's logits equal one uncached forward over that row alone."""
  from lm import kv_cache
  cfg, model, params, tokens = _smeared(tiny_llama_config, B=2, T=12)
  if scan_layers:
    cfg.scan_layers = True
    model, params = model_lib.build(cfg), _stack_layers(params, cfg.n_layers)
  start_B = jnp.asarray([0, 3], jnp.int32)  # row 1 is left-padded by 3 slots
  cache = kv_cache.init(cfg, 2, 12)
  logits, cache = model.apply({"params": params}, tokens[:, :6], cache=cache, cache_index=jnp.int32(0),
                              cache_start_B=start_B)
  steps = [logits]
  for t in range(6, 12):
    out, cache = model.apply({"params": params}, tokens[:, t:t + 1], cache=cache, cache_index=jnp.int32(t),
                             cache_start_B=start_B)
    steps.append(out)
  cached = np.asarray(jnp.concatenate(steps, 1))
  for b, s in enumerate((0, 3)):
    alone = np.asarray(model.apply({"params": params}, tokens[b:b + 1, s:]))[0]
    np.testing.assert_allclose(cached[b, s:], alone, atol=2e-5, err_msg=f"row {b}")


def test_smear_keys_is_an_architecture_key_and_not_exported(tiny_llama_config):
  from lm import hf_config
  from lm.errors import UserError
  assert "smear_keys" in model_lib.ARCHITECTURE_KEYS
  cfg = tiny_llama_config.copy_and_resolve_references()
  cfg.smear_keys = True
  with pytest.raises(UserError, match="smear_keys"):
    hf_config.family_of(cfg)
