"""KV-cache sampler: cache == recomputation, left padding, stops and limits, support of top-k/top-p,
seeds, streaming, and the same tokens on a (data, fsdp, tensor) mesh."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from lm import kv_cache, sampling, sharding
from lm import model as model_lib

PROMPTS = [[5, 9, 2, 7, 1, 3], [11], [4, 4, 8, 30]]  # different lengths: left padding is exercised
N = 12  # new tokens: one length everywhere, so the tests share compiled samplers


def init(model, seed=0):
  boxed = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 4), jnp.int32))["params"]
  return nn.meta.unbox(boxed)


@functools.lru_cache(maxsize=None)
def make(family: str, scan_layers: bool = False, init_std: float = 0.3):
  """Tiny GPT-2 or Llama (GQA); a wide init makes greedy choices peaked, free of float ties."""
  cfg = base.model_config("tiny" if family == "gpt2" else "llama_tiny")
  cfg.update(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=4 if family == "gpt2" else 2,
             d_ff=64, max_len=64, init_std=init_std, scan_layers=scan_layers)
  model = model_lib.build(cfg)
  return model, init(model)


@functools.lru_cache(maxsize=None)
def forward(model):
  return jax.jit(model.apply)


@pytest.fixture(params=["gpt2", "llama", "llama_scan"])
def model_and_params(request):
  return make(request.param.removesuffix("_scan"), scan_layers=request.param.endswith("_scan"))


def test_cached_logits_equal_full_forward(model_and_params):
  """Prefill a left-padded batch, then feed tokens one by one: every logit matches the
  uncached forward pass of each row on its own."""
  model, params = model_and_params
  rows = [[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]]
  prompt_len = [5, 2]
  prompt_BP, start_B = sampling.left_pad([r[:n] for r, n in zip(rows, prompt_len)], pad_id=0)
  cache = kv_cache.init(model.cfg, 2, prompt_BP.shape[1] + 6)
  logits, cache = forward(model)({"params": params}, jnp.asarray(prompt_BP), cache=cache,
                                 cache_index=jnp.int32(0), cache_start_B=jnp.asarray(start_B))
  steps = [logits[:, -1]]
  for t in range(3):
    tok = jnp.asarray([[rows[b][prompt_len[b] + t]] for b in range(2)], jnp.int32)
    logits, cache = forward(model)({"params": params}, tok, cache=cache,
                                cache_index=jnp.int32(prompt_BP.shape[1] + t), cache_start_B=jnp.asarray(start_B))
    steps.append(logits[:, 0])
  for b in range(2):
    full = forward(model)({"params": params}, jnp.asarray([rows[b]]))[0]
    expect = full[prompt_len[b] - 1:prompt_len[b] + 3]
    np.testing.assert_allclose(np.stack([np.asarray(s[b]) for s in steps]), np.asarray(expect),
                               atol=1e-5, rtol=1e-5)


def test_greedy_cached_equals_uncached(model_and_params):
  model, params = model_and_params
  out = sampling.generate(model, params, PROMPTS, N, temperature=0.0)
  ref = sampling.sample_uncached(model, params, PROMPTS, N, temperature=0.0)
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref))
  assert np.asarray(out.lengths).tolist() == [N, N, N]
  assert len({tuple(r) for r in ref}) == 3, "rows should differ, or the test shows nothing"


def test_logprobs_are_the_models_own():
  model, params = make("llama")
  out = sampling.generate(model, params, PROMPTS, N, temperature=1.0, top_k=5, seed=3)
  for b, prompt in enumerate(PROMPTS):
    seq = prompt + np.asarray(out.tokens[b]).tolist()
    logp = jax.nn.log_softmax(forward(model)({"params": params}, jnp.asarray([seq]))[0], -1)
    expect = [float(logp[len(prompt) - 1 + t, seq[len(prompt) + t]]) for t in range(N)]
    np.testing.assert_allclose(np.asarray(out.logprobs[b]), expect, atol=1e-5)


def test_stop_tokens_and_per_row_limits():
  model, params = make("gpt2")
  free = np.asarray(sampling.generate(model, params, PROMPTS, N, temperature=0.0).tokens)
  stop_row0 = int(free[0, 3])  # the 4th greedy token of row 0 becomes its stop token
  first = int(np.argmax(free[0] == stop_row0))
  out = sampling.generate(model, params, PROMPTS, N, temperature=0.0, pad_id=63,
                          stop_ids=[[stop_row0], [], []], max_new_B=[12, 12, 5])
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  assert lengths.tolist() == [first + 1, 12, 5]
  np.testing.assert_array_equal(tokens[0, :first + 1], free[0, :first + 1])
  assert (tokens[0, first + 1:] == 63).all() and (tokens[2, 5:] == 63).all()
  np.testing.assert_array_equal(tokens[1], free[1])
  assert (np.asarray(out.logprobs)[2, 5:] == 0).all()


PROBS = np.array([0.40, 0.25, 0.15, 0.08, 0.05, 0.04, 0.02, 0.01])


@functools.lru_cache(maxsize=None)
def fixed_distribution_model():
  """A GPT-2-style model whose next-token logits are log(PROBS) whatever the input: every
  weight is zero except the final norm's bias (e_0) and the tied embedding's column 0."""
  logits_V = np.log(PROBS)
  cfg = base.model_config("tiny")
  cfg.update(vocab_size=len(logits_V), d_model=8, n_layers=1, n_heads=2, n_kv_heads=2, d_ff=8, max_len=64)
  model = model_lib.build(cfg)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  params = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), nn.meta.unbox(shapes))
  params["ln_final"]["bias"] = jnp.zeros(8).at[0].set(1.0)
  params["embed"]["embedding"] = jnp.zeros((len(logits_V), 8)).at[:, 0].set(jnp.asarray(logits_V))
  return model, params


@pytest.mark.parametrize("top_k,top_p,support", [(0, 1.0, {0, 1, 2, 3, 4, 5, 6, 7}),
                                                 (3, 1.0, {0, 1, 2}),
                                                 (0, 0.7, {0, 1, 2}),   # 0.40 + 0.25 = 0.65 < 0.7: token 2 is needed
                                                 (0, 0.6, {0, 1}),      # 0.40 < 0.6 ≤ 0.65
                                                 (2, 0.3, {0})])       # top-k renormalises first: 0.40/0.65 ≥ 0.3
def test_samples_follow_requested_support(top_k, top_p, support):
  probs = PROBS
  model, params = fixed_distribution_model()
  out = sampling.generate(model, params, [[1]] * 64, 48, temperature=1.0, top_k=top_k, top_p=top_p, seed=1)
  tokens = np.asarray(out.tokens).ravel()
  assert set(np.unique(tokens).tolist()) == support
  kept = sorted(support)
  expect = probs[kept] / probs[kept].sum()
  freq = np.array([(tokens == k).mean() for k in kept])
  np.testing.assert_allclose(freq, expect, atol=0.02)  # 3072 draws: ~3.5 standard errors
  # log-probs stay the model's own, not the renormalised sampling distribution
  np.testing.assert_allclose(np.asarray(out.logprobs).ravel(), np.log(probs)[tokens], atol=1e-5)


@pytest.mark.parametrize("V", [1000, 4096])
def test_inverse_cdf_draws_the_distribution_and_never_a_zero(V):
  # Every third token has probability 0 (a filter's cut), V need not fill the last block.
  rng = np.random.default_rng(0)
  p_V = rng.random(V) ** 3 * (np.arange(V) % 3 != 0)
  p_V /= p_V.sum()
  probs_BV = jnp.broadcast_to(jnp.asarray(p_V, jnp.float32), (512, V))
  draw = jax.jit(sampling.inverse_cdf)
  counts_V = sum(np.bincount(np.asarray(draw(probs_BV, jax.random.key(i))), minlength=V) for i in range(40))
  assert counts_V[p_V == 0].sum() == 0
  # Chi-square over 100 bins of scattered tokens (~200 draws each): ~1 per degree of freedom.
  bin_V = np.arange(V) * 7919 % 100
  got, expect = np.bincount(bin_V, counts_V), np.bincount(bin_V, p_V) * counts_V.sum()
  chi2 = ((got - expect) ** 2 / expect).sum() / 99
  assert 0.6 < chi2 < 1.5, chi2


def test_seed_reproducibility_and_streaming_equals_one_shot():
  model, params = make("llama")
  kw = dict(temperature=1.0, top_p=0.9, stop_ids=[7])
  a = sampling.generate(model, params, PROMPTS, N, seed=5, **kw)
  b = sampling.generate(model, params, PROMPTS, N, seed=5, **kw)
  c = sampling.generate(model, params, PROMPTS, N, seed=6, **kw)
  np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
  assert not np.array_equal(np.asarray(a.tokens), np.asarray(c.tokens))
  chunks = list(sampling.stream(model, params, PROMPTS, N, chunk=5, seed=5, **kw))
  assert all(ch.shape[1] <= 5 for ch in chunks) and len(chunks) >= 2
  streamed = np.concatenate(chunks, 1)
  n = streamed.shape[1]
  np.testing.assert_array_equal(streamed, np.asarray(a.tokens)[:, :n])
  assert n == int(np.asarray(a.lengths).max())


def test_sharded_generation_matches_single_device():
  model, params = make("llama")
  mesh = sharding.make_mesh(base.mesh_config(data=2, fsdp=2, tensor=2))
  rules = base.SHARDING_RULES
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  param_sh = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)
  sharded = jax.device_put(params, param_sh)
  prompts = PROMPTS + [[1, 2], [3], [9, 9, 9], [5, 6, 7, 8, 9], [2]]
  out = sampling.generate(model, sharded, prompts, 12, temperature=0.0, mesh=mesh, rule_pairs=rules)
  ref = sampling.generate(model, params, prompts, 12, temperature=0.0)
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
  assert out.tokens.sharding.spec[0] == ("data", "fsdp")


def test_user_errors_name_the_problem():
  model, params = make("gpt2")
  with pytest.raises(ValueError, match="max_len"):
    sampling.generate(model, params, [[1] * 10], 60)
  with pytest.raises(ValueError, match="at least one token"):
    sampling.generate(model, params, [[]], 4)
  with pytest.raises(ValueError, match="stop lists"):
    sampling.generate(model, params, [[1], [2]], 4, stop_ids=[[1], [2], [3]])
