"""GRPO's pieces: advantages, the clipped objective against REINFORCE, KL, which tokens learn,
training rows, pass@k, and rollouts that never recompile when the parameters change."""
import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import base
from lm import engine, evaluation, grpo, loop, losses, sharding
from lm import model as model_lib
from lm.tokenizer import ByteTokenizer


class MockModel:
  """`apply` hands back the logits stored as the parameters: gradients land on each token's logits."""

  def apply(self, variables, *args, **kwargs):
    return variables["params"]["logits"]


def mock_batch(seed=0, B=4, T=7, V=6):
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(rng.normal(size=(B, T, V)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, V, (B, T)), jnp.int32)
  mask = np.asarray(rng.random((B, T)) < 0.7, np.float32)
  mask[0, :] = 0  # a completion with no sampled token at all
  batch = {"inputs": targets, "targets": targets, "loss_mask": jnp.asarray(mask),
           "advantages": jnp.asarray(rng.normal(size=B), jnp.float32)}
  logp = -optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  batch["old_logprobs"] = logp * mask
  return {"logits": logits}, batch, logp


def test_group_advantages_sum_to_zero_and_equal_rewards_give_none():
  r = np.array([[1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 1], [0.5, 0.25, 0.0, 1.0]], np.float32)
  for scale in (False, True):
    a = grpo.group_advantages(r, scale)
    np.testing.assert_allclose(a.sum(axis=1), 0, atol=1e-6)
    assert not a[1].any()  # all equal: no signal
    assert (np.sign(a) == np.sign(r - r.mean(1, keepdims=True))).all()
  np.testing.assert_allclose(grpo.group_advantages(r, True)[[0, 2, 3]].std(axis=1), 1, atol=1e-4)
  np.testing.assert_allclose(grpo.group_advantages(r, False)[0], [0.5, -0.5, -0.5, 0.5])


@pytest.mark.parametrize("old", ["recomputed", "absent"])
@pytest.mark.parametrize("aggregation", losses.AGGREGATIONS)
def test_on_policy_clipped_gradient_is_the_reinforce_gradient(aggregation, old):
  """K=1, with the old log-probs recomputed by a forward pass or left out (the loss then takes
  stop_grad of its own, as experiments.grpo does for rl.passes = 1): the REINFORCE gradient."""
  params, batch, _ = mock_batch()
  if old == "absent":
    del batch["old_logprobs"]
  L = 7
  fn = losses.grpo(MockModel(), clip_low=0.2, clip_high=0.28, kl_coef=0.0, aggregation=aggregation,
                   max_new_tokens=L)

  def grpo_mean(p):
    loss, aux = fn(p, batch, None)
    return loss / aux["weight"]

  def reinforce(p):
    logp = -optax.softmax_cross_entropy_with_integer_labels(p["logits"], batch["targets"])
    m, a = batch["loss_mask"], batch["advantages"][:, None]
    per_seq = (a * logp * m).sum(-1)
    n = m.sum(-1)
    rows = (n > 0).sum()
    if aggregation == "token_mean":
      return -per_seq.sum() / m.sum()
    if aggregation == "sequence_mean":
      return -(per_seq / jnp.maximum(n, 1)).sum() / rows
    return -per_seq.sum() / L / rows

  g, want = jax.grad(grpo_mean)(params), jax.grad(reinforce)(params)
  np.testing.assert_allclose(g["logits"], want["logits"], atol=1e-6)
  assert np.abs(want["logits"]).max() > 1e-3


def test_clipping_stops_the_gradient_outside_the_trust_region():
  params, batch, logp = mock_batch(1)
  fn = losses.grpo(MockModel(), clip_low=0.2, clip_high=0.2, kl_coef=0.0, aggregation="token_mean",
                   max_new_tokens=7)
  adv = jnp.ones_like(batch["advantages"])
  # Old log-probs far below the current ones: ratio ≫ 1 + clip with a positive advantage → clipped.
  far = dict(batch, advantages=adv, old_logprobs=(logp - 2.0) * batch["loss_mask"])
  g = jax.grad(lambda p: fn(p, far, None)[0])(params)["logits"]
  assert not np.asarray(g).any()
  _, aux = fn(params, far, None)
  assert float(aux["clip_fraction"]) == float(batch["loss_mask"].sum())


def test_kl_of_the_policy_against_itself_is_zero():
  params, batch, logp = mock_batch(2)
  fn = losses.grpo(MockModel(), clip_low=0.2, clip_high=0.2, kl_coef=0.1, aggregation="token_mean",
                   max_new_tokens=7)
  same = dict(batch, ref_logprobs=logp * batch["loss_mask"])
  _, aux = fn(params, same, None)
  assert float(aux["kl"]) == 0.0
  other = dict(batch, ref_logprobs=(logp - 0.3) * batch["loss_mask"])
  _, aux = fn(params, other, None)
  assert float(aux["kl"]) > 0  # k3 is ≥ 0 and positive when the policies differ
  with pytest.raises(ValueError, match="ref_logprobs"):
    fn(params, batch, None)


def fake_rollout():
  """Two prompts × group 2; row 1 has a forced tool output, row 3 is cut at the limit."""
  prompts = [[1, 2, 3], [4, 5]]
  N = 6
  tokens = np.array([[7, 8, 9, 0, 0, 0], [7, 20, 21, 22, 9, 0], [10, 9, 0, 0, 0, 0], [11, 11, 11, 11, 11, 11]],
                    np.int32)
  forced = np.zeros_like(tokens, bool)
  forced[1, 1:4] = True
  lengths = np.array([3, 5, 2, 6], np.int32)
  return prompts, tokens, forced, lengths, N


def test_training_rows_mask_only_sampled_completion_tokens():
  prompts, tokens, forced, lengths, N = fake_rollout()
  rows = grpo.training_rows(prompts, 2, tokens, forced, lengths, seq_len=10, pad_id=0)
  P = 10 + 1 - N  # the prompt's last token sits at column P - 1 of the full sequence
  assert rows["inputs"].shape == (4, 10)
  # Row 1: prompt [1 2 3], completion 7 (sampled) 20 21 22 (forced) 9 (sampled).
  np.testing.assert_array_equal(rows["targets"][1, P - 1:P + 4], [7, 20, 21, 22, 9])
  np.testing.assert_array_equal(rows["loss_mask"][1, P - 1:P + 4], [1, 0, 0, 0, 1])
  assert rows["loss_mask"].sum() == 3 + 2 + 2 + 6  # sampled completion tokens, nothing else
  np.testing.assert_array_equal(rows["segment_ids"][2], [0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(rows["positions"][2, 3:7], [0, 1, 2, 3])
  with pytest.raises(ValueError, match="does not fit"):
    grpo.training_rows([[1] * 9, [1]], 2, tokens, forced, lengths, seq_len=10, pad_id=0)


def test_prompt_padding_and_tool_output_tokens_get_no_gradient():
  prompts, tokens, forced, lengths, N = fake_rollout()
  rows = grpo.training_rows(prompts, 2, tokens, forced, lengths, seq_len=10, pad_id=0)
  rng = np.random.default_rng(3)
  logits = jnp.asarray(rng.normal(size=(4, 10, 32)), jnp.float32)
  batch = {k: jnp.asarray(v) for k, v in rows.items()}
  batch["advantages"] = jnp.asarray([1.0, -1.0, 0.5, -0.5])
  logp = -optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
  batch["old_logprobs"] = logp * batch["loss_mask"]
  fn = losses.grpo(MockModel(), clip_low=0.2, clip_high=0.2, kl_coef=0.05, aggregation="token_mean",
                   max_new_tokens=N)
  batch["ref_logprobs"] = (logp - 0.1) * batch["loss_mask"]
  g = np.abs(np.asarray(jax.grad(lambda p: fn(p, batch, None)[0])({"logits": logits})["logits"])).sum(-1)
  learns = np.asarray(rows["loss_mask"]) > 0
  assert (g[learns] > 0).all() and not g[~learns].any()


@pytest.mark.parametrize("aggregation", losses.AGGREGATIONS)
def test_groups_without_signal_leave_the_denominator(aggregation):
  """rl.drop_no_signal: rows of all-equal groups get mask 0, so the update is the mean over the groups
  with a signal, as if the others had never been sampled (their advantages are 0 either way)."""
  prompts, tokens, forced, lengths, N = fake_rollout()
  rows = grpo.training_rows(prompts, 2, tokens, forced, lengths, seq_len=10, pad_id=0)
  rewards = np.array([[1.0, 0.0], [1.0, 1.0]], np.float32)  # the second prompt's group: no signal
  mask = grpo.drop_no_signal(rows["loss_mask"], rewards)
  np.testing.assert_array_equal(mask[:2], rows["loss_mask"][:2])
  assert not mask[2:].any() and mask.dtype == rows["loss_mask"].dtype
  rng = np.random.default_rng(4)
  logits = {"logits": jnp.asarray(rng.normal(size=(4, 10, 32)), jnp.float32)}
  fn = losses.grpo(MockModel(), clip_low=0.2, clip_high=0.2, kl_coef=0.0, aggregation=aggregation,
                   max_new_tokens=N)
  adv = jnp.asarray(grpo.group_advantages(rewards, True).reshape(-1))

  def mean_loss(p, batch):
    loss, aux = fn(p, batch, None)
    return loss / jnp.maximum(aux["weight"], 1.0)

  full = {k: jnp.asarray(v) for k, v in rows.items()} | {"advantages": adv}
  g_drop = jax.grad(mean_loss)(logits, full | {"loss_mask": jnp.asarray(mask)})["logits"]
  only = {k: v[:2] for k, v in full.items()}  # the batch of the signal group alone
  g_only = jax.grad(mean_loss)({"logits": logits["logits"][:2]}, only)["logits"]
  np.testing.assert_allclose(g_drop[:2], g_only, atol=1e-7)
  assert not np.asarray(g_drop[2:]).any() and np.abs(np.asarray(g_only)).max() > 1e-3
  g_keep = jax.grad(mean_loss)(logits, full)["logits"]  # kept rows dilute the mean instead
  assert np.abs(np.asarray(g_keep[:2])).max() < np.abs(np.asarray(g_only)).max()


def test_pass_at_k_is_the_unbiased_estimator():
  for n, c, k in [(4, 0, 1), (4, 1, 1), (4, 1, 2), (8, 3, 4), (5, 5, 3)]:
    brute = np.mean([any(i < c for i in s) for s in itertools.combinations(range(n), k)])
    assert grpo.pass_at_k(n, c, k) == pytest.approx(brute)
  assert grpo.pass_at_k(4, 2, 1) == 0.5


def build(devices: int, opt_name: str = "adamw"):
  tok = ByteTokenizer()
  cfg = base.model_config("llama_tiny")
  cfg.update(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_len=64)
  opt = base.optimizer_config(lr=1e-2)
  opt.update(warmup_steps=0, schedule="constant", name=opt_name)
  mesh = sharding.make_mesh(base.mesh_config(), devices=jax.devices()[:devices])
  loss = lambda m: losses.grpo(m, clip_low=0.2, clip_high=0.2, kl_coef=0.01, aggregation="constant",
                               max_new_tokens=12)
  stage = loop.build_stage(cfg, opt, 10, mesh, base.SHARDING_RULES, loss, micro_batch=8, seq_len=32,
                           forward=losses.token_logprobs)
  return tok, stage


def test_three_steps_with_new_parameters_compile_once():
  """Rollout (prefill, decode), log-prob forwards and the train step: new parameters every step,
  no new compilation after the first."""
  tok, stage = build(1)
  state = stage.init(0)
  ref = jax.tree.map(jnp.copy, state.params)
  prompts = [[tok.bos_id, 65, 66, 67], [tok.bos_id, 70, 71]]
  examples = ["a", "b"]
  rollouts = grpo.Rollouts(stage.model, tok, stage.mesh, stage.rules, stage.forward_step,
                           reward=lambda text, ex: float(len(text) % 2), group=4, max_new_tokens=12,
                           seq_len=32, ref_params=ref)
  sizes = []
  for step in range(3):
    batch, info, texts = rollouts(state.params, examples, prompts, seed=step)
    assert len(texts) == 8 and 0 <= info["rollout/reward"] <= 1
    before = jax.tree.leaves(state.params)[0].copy()
    state, metrics = stage.train_step(state, batch, jax.random.key(0))
    assert not np.array_equal(before, jax.tree.leaves(state.params)[0]) or not batch["advantages"].any()
    sizes.append((engine._prefill_jit._cache_size(), engine._decode_jit._cache_size(),
                  stage.train_step.jitted._cache_size(), stage.forward_step.jitted._cache_size()))
  assert sizes[0] == sizes[1] == sizes[2], sizes
  # The on-policy ratio is 1: old log-probs come from the same forward as the loss's.
  assert float(metrics["ratio"]) == pytest.approx(1.0, abs=1e-5)


def test_same_grpo_step_on_one_and_eight_devices():
  """One rollout batch (made on one device), then the GRPO step on 1 and on 8 devices."""
  # SGD: Adam's first update is g/|g|, which turns rounding noise on near-zero gradients into lr.
  (tok, stage1), (_, stage8) = build(1, "sgd"), build(8, "sgd")
  state = stage1.init(0)
  r = grpo.Rollouts(stage1.model, tok, stage1.mesh, stage1.rules, stage1.forward_step,
                    reward=lambda text, ex: float(len(text) % 2), group=4, max_new_tokens=12, seq_len=32,
                    ref_params=jax.tree.map(jnp.copy, state.params))
  batch, _, _ = r(state.params, ["a", "b"], [[tok.bos_id, 65, 66, 67], [tok.bos_id, 70, 71]], seed=3)
  assert batch["advantages"].any()
  host = jax.device_get(batch)
  out = []
  for stage in (stage1, stage8):
    state = stage.init(0)
    state, metrics = stage.train_step(state, sharding.host_batch_to_global(host, stage.mesh), jax.random.key(0))
    out.append((jax.device_get(metrics), jax.device_get(state.params)))
  for k in ("loss", "kl", "entropy", "grad_norm"):
    assert out[0][0][k] == pytest.approx(out[1][0][k], rel=1e-5, abs=1e-7), k
  for a, b in zip(jax.tree.leaves(out[0][1]), jax.tree.leaves(out[1][1])):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_kl_measured_outside_the_loss_equals_the_losses():
  """grpo.kl_terms (the held-out KL of experiments.grpo when kl_coef is 0) and the loss's KL metric
  agree on one batch, for a reference that differs from the policy."""
  tok, stage = build(1, "sgd")
  state = stage.init(0)
  ref = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(1), x.shape, x.dtype), state.params)
  r = grpo.Rollouts(stage.model, tok, stage.mesh, stage.rules, stage.forward_step,
                    reward=lambda text, ex: float(len(text) % 2), group=4, max_new_tokens=12, seq_len=32,
                    ref_params=ref)
  batch, _, _ = r(state.params, ["a", "b"], [[tok.bos_id, 65, 66, 67], [tok.bos_id, 70, 71]], seed=5)
  total, count = grpo.kl_terms(stage.forward_step, state.params, ref, batch)  # before: the step donates state
  _, metrics = stage.train_step(state, batch, jax.random.key(0))  # the loss at the pre-update parameters
  assert count.sum() == float(np.asarray(batch["loss_mask"]).sum()) > 0
  assert float(metrics["kl"]) > 1e-4
  assert total.sum() / count.sum() == pytest.approx(float(metrics["kl"]), rel=1e-4)


def test_min_train_exposure_zero_trains_on_never_stated_facts_too():
  from lm import tasks
  options = base.task_options()
  options.world.min_train_exposure = 0
  every = tasks.from_config(["world"], options)["world"].facts("train")
  stated = tasks.from_config(["world"], base.task_options())["world"].facts("train")
  assert min(row["exposures"] for row in every) == 0 < min(row["exposures"] for row in stated)
  assert len(every) > len(stated)


def test_wrong_penalty_ranks_right_over_refusal_over_a_wrong_answer():
  """`rl.wrong_penalty`: a reply neither right nor a refusal scores −p, a refusal that names no answer 0,
  a right one 1; a wrong answer with a hedge is still wrong, in the reward and in the refusal count."""
  from lm import tasks
  world = tasks.from_config(["world"], base.task_options())["world"]
  ex = next(e for e in world.examples("train") if e.meta["attribute"] == "birth_year")
  wrong = ex.target.replace(ex.reference, str(int(ex.reference) + 1))
  replies = (ex.target, wrong, "I don't know.", wrong + " I'm not sure.")
  for penalty, expected in ((0.0, (1.0, 0.0, 0.0, 0.0)), (0.5, (1.0, -0.5, 0.0, -0.5))):
    assert tuple(evaluation.honesty_reward(world, t, ex, penalty) for t in replies) == expected
  assert [evaluation.declines(world, r, ex) for r in replies[2:]] == [True, False]  # GRPO's run_tasks(refuses=)
