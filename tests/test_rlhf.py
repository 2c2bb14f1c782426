"""RLHF: the gold labeller on hand-checked replies, synthetic rankings through the ranked-JSONL reader,
the reward model as GRPO's batch reward (scores = the forward on the rendered conversations, in row
order, padding dropped), best-of-n and the Gao et al. fits, the early-stopping rule, and (slow) a tiny
RLHF run end to end.

Sampling is mocked where the test is about what happens to samples (engine.rollout returns fixed
replies); the reward models are tiny random ones drawn on the host.
"""
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import base
from lm import engine, gold, grpo, losses, overopt, reward_model, rlhf, sharding
from lm.data import ranking_rows, rankings
from lm.tasks.base import Example
from lm.tasks.world import WorldTask
from lm.tokenizer import ByteTokenizer
from tests.conftest import ROOT, env
from tests.test_reward_model import init, score_config

TOK = ByteTokenizer()


@pytest.fixture(scope="module")
def world():
  return WorldTask(seed=0)


def person_example(world, attribute="birth_year"):
  return next(ex for ex in world.examples("train", 200, 0) if ex.meta["attribute"] == attribute)


def test_gold_scores_hand_checked_replies(world):
  ex = person_example(world)
  right = ex.target                                  # "She was born in 1953."
  wrong = right.replace(ex.reference, str(int(ex.reference) + 1))
  assert gold.score(right, True, ex, world) == pytest.approx(1.75)      # correct, ended, tidy, concise
  assert gold.score(wrong, True, ex, world) == pytest.approx(0.75)      # the verifier says no
  assert gold.score(right, False, ex, world) == pytest.approx(1.25)     # ran into the limit
  assert gold.score(right.rstrip("."), True, ex, world) == pytest.approx(1.5)  # no full stop: not tidy
  wordy = right[:-1] + " and that is all I know about it"
  assert gold.score(wordy + ".", True, ex, world) == pytest.approx(1.75 - 0.05 * 8)
  babble = right + " the the the the the the the the"
  f = gold.features(babble, True, ex, world)
  assert f["repetition"] == pytest.approx(6 / 12) and f["correct"] == 1  # still states the year once
  assert gold.score(babble, True, ex, world) < gold.score(right, True, ex, world) - 0.8
  assert gold.repetition("a b") == 0.0 and gold.repetition("x y x y x y") == pytest.approx(1 - 2 / 5)


def test_gold_ranking_ties_and_order():
  assert gold.ranking([0.5, 1.75, 0.5, 1.0]) == [1, 3, [0, 2]]
  assert gold.ranking([1.0, 1.0]) == [[0, 1]]


def fake_rollout(replies_R, tok=TOK, ended_R=None):
  """An engine.Rollout whose rows are the given texts, each closed by <|im_end|> unless not ended."""
  end = tok.special_ids["<|im_end|>"]
  ended_R = ended_R or [True] * len(replies_R)
  seqs = [tok.encode(t) + ([end] if e else []) for t, e in zip(replies_R, ended_R)]
  N = max(map(len, seqs))
  tokens = np.full((len(seqs), N), tok.pad_id, np.int32)
  for r, s in enumerate(seqs):
    tokens[r, :len(s)] = s
  lengths = np.array([len(s) for s in seqs], np.int32)
  return engine.Rollout(tokens, np.zeros(tokens.shape, np.float32), np.zeros(tokens.shape, bool), lengths, [],
                        np.zeros(len(seqs)), N)


def test_synthetic_rankings_round_trip_through_the_reader(tmp_path, world, monkeypatch):
  exs = [person_example(world, a) for a in ("birth_year", "city", "profession")]
  k = 4
  replies = []
  for ex in exs:
    wrong = ex.target.replace(ex.reference, "Nowhere" if ex.meta["attribute"] != "birth_year" else "1111")
    replies += [ex.target, wrong, ex.target + " " + ex.target, ex.target]
  replies[8:12] = [exs[2].target] * 4  # the third question: all four replies tie → dropped
  ended = [True, True, True, False] * 3
  monkeypatch.setattr(engine, "rollout", lambda *a, **kw: fake_rollout(replies, ended_R=ended))
  records, stats = rlhf.sample_rankings(None, None, TOK, None, None, exs, world, k, 16, 4, seed=0)
  assert stats["all_tied"] == 0 and len(records) == 3  # the last reply of each is not ended: no full tie
  replies[11] = exs[2].target
  ended = [True] * 12
  monkeypatch.setattr(engine, "rollout", lambda *a, **kw: fake_rollout(replies, ended_R=ended))
  records, stats = rlhf.sample_rankings(None, None, TOK, None, None, exs, world, k, 16, 4, seed=0)
  assert stats["all_tied"] == 1 and len(records) == 2
  path = tmp_path / "r.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  read = list(rankings.ranked_jsonl(str(path)))
  assert len(read) == 2
  for rec, r in zip(records, read):
    assert list(r.responses) == rec["responses"] and list(r.prompt) == rec["prompt"]
    g = rec["gold"]
    assert sorted(r.pairs()) == sorted((i, j) for i in range(k) for j in range(k) if g[i] > g[j])
  assert read[0].ranks == (0, 2, 1, 0)  # target (1.75) ties with itself; repeated 2nd > wrong


def rm_scorer(batch_size, seq_len=48, seed=0):
  cfg = score_config("llama", vocab_size=TOK.vocab_size, max_len=64)
  model, params = init(cfg, seed=seed, std=0.3)
  mesh = sharding.make_mesh(base.mesh_config())
  params = jax.device_put(params, NamedSharding(mesh, P()))
  return reward_model.Scorer(model, params, TOK, mesh, tuple(base.SHARDING_RULES), seq_len=seq_len,
                             batch_size=batch_size), model, params


def prompts_and_replies():
  prompts = [[{"role": "user", "content": q}] for q in ("Who?", "When was Alma born?", "Where is Lorberg?")]
  replies = ["She.", "In 1953.", "It is a city in Veloria, I think.", "x", "", "Lorberg!", "1953 1953 1953"]
  return [prompts[i % 3] for i in range(len(replies))], replies


def test_scorer_equals_the_forward_on_each_rendered_conversation():
  scorer, model, params = rm_scorer(batch_size=8)
  prompts, replies = prompts_and_replies()
  got = scorer(prompts * 2, replies * 2)  # 14 rows: two batches of 8 (the last 2 empty, dropped), order kept
  assert got.shape == (14,)
  np.testing.assert_allclose(got[7:], got[:7], atol=1e-5)
  # The same conversations, rendered one by one and left-padded to another width in one batch.
  W = 64
  inputs, mask = np.full((8, W), TOK.pad_id, np.int32), np.zeros((8, W), np.int32)
  for i, (p, text) in enumerate(zip(prompts, replies)):
    ids, _, _ = ranking_rows.render_row(p, text, TOK, 48)
    inputs[i, W - ids.size:], mask[i, W - ids.size:] = ids, 1
  alone = jax.jit(lambda p, x, m: losses.last_token_scores(model, p, x, m))(params, inputs, mask)
  np.testing.assert_allclose(got[:7], np.asarray(alone)[:7], atol=1e-4)
  assert len(set(np.round(got[:7], 5))) == 7  # different conversations, different scores
  with pytest.raises(ValueError, match="7 prompts for 14 responses"):
    scorer(prompts, replies * 2)


def test_rollouts_take_the_reward_models_scores_in_row_order(monkeypatch):
  scorer, _, _ = rm_scorer(batch_size=8)
  G = 4  # 2 prompts × 4: rows split over the 8 test devices
  exs = [Example("world", [{"role": "user", "content": q}], "", "", {}) for q in ("Who?", "When was Alma born?")]
  replies = ["She.", "In 1953.", "x", "It is.", "1953 1953 1953", "Lorberg!", "", "She was born in 1953."]
  monkeypatch.setattr(engine, "rollout", lambda *a, **kw: fake_rollout(replies))
  seen = []

  def batch_reward(texts, examples):
    seen.append((list(texts), list(examples)))
    return scorer([e.messages for e in examples], texts)

  fmt_prompts = [[1, 2, 3], [4, 5]]
  ro = grpo.Rollouts(None, TOK, scorer.mesh, None, None, reward=None, group=G, max_new_tokens=24, seq_len=40,
                     old_logprobs=False, batch_reward=batch_reward)
  batch, info, texts = ro(None, exs, fmt_prompts, seed=0)
  assert list(texts) == replies and seen[0][0] == replies
  assert [e.messages[0]["content"] for e in seen[0][1]] == ["Who?"] * 4 + ["When was Alma born?"] * 4
  want = scorer([exs[r // G].messages for r in range(8)], replies)
  np.testing.assert_allclose(np.asarray(batch["advantages"]),
                             grpo.group_advantages(want.reshape(2, G), True).reshape(-1), atol=1e-5)
  assert info["rollout/reward"] == pytest.approx(float(want.mean()), abs=1e-5)
  assert "rollout/correct_tokens" not in info and "rollout/wrong_tokens" not in info


def test_best_of_n_kl_formula_and_exact_expectation():
  assert overopt.bon_kl(1) == 0.0
  assert overopt.bon_kl(2) == pytest.approx(np.log(2) - 0.5)
  assert overopt.bon_kl(64) == pytest.approx(np.log(64) - 63 / 64)
  assert np.all(np.diff(overopt.bon_kl(np.arange(1, 65))) > 0)
  # The exact expectation against brute force over every n-subset of m = 6 samples.
  import itertools
  rng = np.random.default_rng(0)
  proxy, gold_ = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
  proxy[1, [1, 4]] = proxy[1].max() + 1  # a tie at the top: max() takes the earlier sample, so must we
  proxy[2] = np.round(proxy[2])          # ties throughout
  got = overopt.best_of_n(proxy, gold_, [1, 2, 3, 6])
  for n, gp, gg in zip((1, 2, 3, 6), got["proxy"], got["gold"]):
    bp, bg = [], []
    for p in range(3):
      for sub in itertools.combinations(range(6), n):
        best = max(sub, key=lambda i: proxy[p, i])
        bp.append(proxy[p, best])
        bg.append(gold_[p, best])
    assert gp == pytest.approx(np.mean(bp)) and gg == pytest.approx(np.mean(bg))
  assert got["proxy"][0] == pytest.approx(proxy.mean())  # best-of-1 is the policy


def test_gao_fits_recover_known_coefficients():
  d = np.linspace(0.05, 3.0, 25)
  a, b = overopt.fit_bon(d, overopt.bon_form(d, 1.3, 0.4))
  assert (a, b) == pytest.approx((1.3, 0.4), abs=1e-6)
  a, b = overopt.fit_rl(np.r_[0.0, d], np.r_[0.0, overopt.rl_form(d, 0.8, 0.5)])
  assert (a, b) == pytest.approx((0.8, 0.5), abs=1e-6)
  noisy = overopt.bon_form(d, 1.3, 0.4) + np.random.default_rng(0).normal(0, 0.01, d.size)
  assert overopt.fit_bon(d, noisy) == pytest.approx((1.3, 0.4), abs=0.05)


def test_early_stop_rule_on_a_synthetic_curve():
  steps = [0, 10, 20, 30, 40, 50, 60]
  rises_then_falls = [0.0, 0.3, 0.5, 0.45, 0.4, 0.2, 0.1]
  assert overopt.early_stop(steps, rises_then_falls, patience=2) == (20, 40)
  assert overopt.early_stop(steps, rises_then_falls, patience=5) == (20, None)
  assert overopt.early_stop(steps, [0, 1, 2, 3, 4, 5, 6], patience=1) == (60, None)
  noisy_peak = [0.0, 0.3, 0.25, 0.5, 0.4, 0.3, 0.2]  # one dip does not fire with patience 2
  assert overopt.early_stop(steps, noisy_peak, patience=2) == (30, 50)


@pytest.mark.slow
def test_tiny_rlhf_run_writes_the_over_optimisation_report(tmp_path):
  """pretrain (byte model) → gold rankings → reward models → 3 RLHF iterations: the report sections."""
  from tests.test_sft_run import BASE, run
  corpus = tmp_path / "text.txt"
  corpus.write_text("\n\n".join(f"She was born in {1900 + i}. It is a city in Veloria." for i in range(80)))
  run("experiments.pretrain", tmp_path / "base", "configs/pretrain.py:tiny", *BASE, f"--config.data.path={corpus}")
  for seed in (0, 1):
    out = subprocess.run([sys.executable, "-m", "experiments.gold_rankings", f"--policy={tmp_path / 'base'}",
                          f"--out={tmp_path / f'r{seed}.jsonl'}", "--prompts=64", "--k=4", "--batch=16",
                          "--max_new_tokens=12", f"--seed={seed}"], env=env(), cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "rankings of 4" in out.stdout
    run("experiments.reward_model", tmp_path / f"rm{seed}", "configs/reward_model.py:tiny",
        f"--config.init_from.workdir={tmp_path / 'base'}", "--config.data.kind=ranked",
        f"--config.data.path={tmp_path / f'r{seed}.jsonl'}", "--config.data.val_fraction=0.3",
        "--config.train.seq_len=96", "--config.train.batch_size=8", "--config.train.steps=2",
        "--config.train.eval_every=2", "--config.train.ckpt_every=2", "--config.train.log_every=1")
  rl = tmp_path / "rlhf"
  run("experiments.grpo", rl, "configs/rlhf.py:tiny", f"--config.init_from.workdir={tmp_path / 'base'}",
      f"--config.reward.workdir={tmp_path / 'rm0'}", f"--config.reward.stop_workdir={tmp_path / 'rm1'}",
      "--config.data.world=", "--config.data.exposures=", "--config.rl.prompts_per_step=2", "--config.rl.group=4",
      "--config.train.batch_size=8", "--config.rl.max_new_tokens=12", "--config.train.seq_len=96",
      "--config.reward.seq_len=96", "--config.reward.batch_size=8", "--config.train.steps=3",
      "--config.train.eval_every=1", "--config.train.ckpt_every=3", "--config.eval.examples=2",
      "--config.eval.samples=2", "--config.eval.max_new_tokens=12", "--config.eval.best_of_n=4",
      "--config.eval.bon_prompts=2", "--config.data.train_prompts=16", "--config.eval.show=1")
  rows = [json.loads(l) for l in open(rl / "metrics.jsonl")]
  evals = [r for r in rows if "eval/proxy" in r]
  assert [r["step"] for r in evals] == [0, 1, 2, 3]
  assert all(k in r for r in evals for k in ("eval/gold", "eval/proxy2", "eval/kl_reply"))
  assert any("train/kl" in r for r in rows)  # the KL penalty is in the loss
  bon = json.loads((rl / "best_of_n.json").read_text())
  assert bon["n"] == [1, 2, 4] and bon["kl"][0] == 0.0
  report = (rl / "report.md").read_text()
  for needle in ("## Reward over-optimisation", "Best-of-n against the proxy", "R(d) = d(α − β log d)",
                 "Early stopping (no gold labels)", "### before RLHF", "### at the end", "overoptimisation.png"):
    assert needle in report, needle
  assert (rl / "overoptimisation.png").exists()


def test_gold_rankings_command_line_errors_are_one_line(tmp_path):
  """The command exists and checks its flags before loading anything (exit 2, one line)."""
  for args, needle in (([], "--policy is required"),
                       ([f"--policy={tmp_path}", f"--out={tmp_path / 'r.jsonl'}"], "--policy: no checkpoints in")):
    out = subprocess.run([sys.executable, "-m", "experiments.gold_rankings", *args], env=env(), cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert needle in out.stderr.strip().splitlines()[-1], out.stderr[-500:]
  assert not (tmp_path / "r.jsonl").exists()


def test_agreement_stop_rule_on_a_synthetic_curve():
  steps = [0, 8, 16, 24, 32]
  assert overopt.agreement_stop(steps, [0.8, 0.75, 0.7, 0.6, 0.5], drop=0.15) == (16, 24)
  assert overopt.agreement_stop(steps, [0.8, 0.75, 0.7, 0.7, 0.66], drop=0.15) == (32, None)
  assert overopt.agreement_stop(steps, [0.8, 0.5, 0.9, 0.9, 0.9], drop=0.15) == (0, 8)  # the first drop counts


@pytest.mark.parametrize("updates,needle", [
    ({"reward.kind": "human"}, "config.reward.kind: 'human' is not one of task, model"),
    ({"reward.workdir": ""}, "config.reward.workdir: reward.kind='model' needs"),
    ({"reward.kind": "task", "eval.best_of_n": 0}, "config.reward.workdir / stop_workdir are read only"),
    ({"eval.tasks": "arithmetic"}, "config.reward.gold: the gold labeller"),
    ({"eval.best_of_n": 1}, "config.eval.best_of_n: needs"),
    ({"rl.kl_coef": 0.0, "rl.measure_kl": False}, "config.rl.kl_coef: RLHF measures reward against KL"),
    ({"eval.bon_prompts": 0}, "config.eval.bon_prompts=0: best-of-n needs"),
    ({"reward.stop_patience": 0}, "config.reward.stop_patience=0: must be"),
    ({"reward.batch_size": 0}, "config.reward.batch_size=0: must be"),
])
def test_rlhf_config_errors_name_the_key(updates, needle):
  from configs import rlhf as rlhf_config
  from lm import rlhf
  from lm.errors import UserError
  c = rlhf_config.get_config("tiny")
  rlhf.validate(c)  # the shipped config is valid
  for key, value in updates.items():
    block, name = key.split(".")
    c[block][name] = value
  with pytest.raises(UserError, match=needle.replace("(", r"\(")):
    rlhf.validate(c)
