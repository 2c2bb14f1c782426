"""lm.readout: each signal computed as a direct pass computes it, and scored against the refusal bar."""
import random

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import base
from lm import chat_template, init_from, readout, refusal, sharding
from lm.tasks.world import WorldTask


def row(group_exposures: int, right: bool, refused: bool = False) -> dict:
  return {"meta": {"exposures": group_exposures}, "score": float(right), "refused": refused}


# 4 never-seen facts (3 hallucinated, 1 refused by the greedy reply) and 4 facts seen 8+ times (2 right).
ROWS = [row(0, False), row(0, False), row(0, False), row(0, False, refused=True),
        row(9, True), row(9, True), row(9, False), row(12, False), row(1, True)]


def test_auroc_counts_pairs_of_8plus_right_over_never_seen_wrong_with_ties_half_and_nan_left_out():
  # positives (8+ right): rows 4, 5; negatives (never-seen, wrong, not refused): rows 0, 1, 2.
  scores = np.array([0.1, 0.2, 0.9, 0.0, 0.8, 0.9, 0.0, 0.0, 0.0])
  # pairs: 0.8 beats 0.1, 0.2, loses to 0.9 → 2; 0.9 beats 0.1, 0.2, ties 0.9 → 2.5; of 6
  assert readout.auroc(scores, ROWS) == pytest.approx(4.5 / 6)
  scores[2] = np.nan  # left out: 4 of 4 pairs
  assert readout.auroc(scores, ROWS) == 1.0
  assert readout.auroc(-np.array([0.1, 0.2, 0.5, 0, 0.8, 0.9, 0, 0, 0]), ROWS) == 0.0


def test_trade_declines_under_the_threshold_and_keeps_the_greedy_refusals():
  scores = np.array([0.1, 0.2, 0.9, 0.0, 0.8, 0.3, 0.0, 0.0, 0.0])
  none = readout.trade(scores, ROWS, -np.inf)
  assert none == {"never_hallucinated": 0.75, "8+_accuracy": 0.5, "8+_declined": 0.0}
  got = readout.trade(scores, ROWS, 0.25)  # declines rows 0, 1 (never) and 6, 7 (8+, wrong anyway)
  assert got == {"never_hallucinated": 0.25, "8+_accuracy": 0.5, "8+_declined": 0.5}
  got = readout.trade(scores, ROWS, 0.5)   # also row 5: an 8+ fact it had right
  assert got["8+_accuracy"] == 0.25
  assert readout.trade(np.full(9, np.nan), ROWS, 1.0) == none  # no score: never declined


def test_bar_trade_takes_the_most_removed_hallucination_within_the_accuracy_budget():
  scores = np.array([0.1, 0.2, 0.9, 0.0, 0.8, 0.3, 0.0, 0.0, 0.0])
  best = readout.bar_trade(scores, ROWS, max_drop=0.05)  # 0.3 would cost 0.25 of 8+ accuracy
  assert best["threshold"] == pytest.approx(0.3) and best["never_hallucinated"] == 0.25 and best["halves"]
  assert readout.bar_trade(scores, ROWS, max_drop=0.3)["never_hallucinated"] == 0.25  # 0.9 costs 0.5: still out
  flat = readout.bar_trade(np.zeros(9), ROWS)
  assert flat["threshold"] == -np.inf and not flat["halves"]  # nothing to tell apart: nothing declined


def test_fit_logistic_separates_what_is_linearly_separable_and_is_deterministic():
  rng = np.random.default_rng(0)
  X = rng.normal(size=(200, 8))
  y = (X[:, 0] - 2 * X[:, 3] > 0).astype(float)
  score = readout.fit_logistic(X, y, l2=0.01)
  test = rng.normal(size=(100, 8))
  assert np.mean((score(X) > 0) == y) > 0.97
  assert np.mean((score(test) > 0) == (test[:, 0] - 2 * test[:, 3] > 0)) >= 0.9
  np.testing.assert_array_equal(score(test), readout.fit_logistic(X, y, l2=0.01)(test))


@pytest.fixture(scope="module")
def loaded(byte_base):
  mesh = sharding.make_mesh(base.mesh_config(data=1), jax.devices()[:1])
  return init_from.load_model(ml_collections.ConfigDict({"workdir": str(byte_base), "hf_dir": "", "step": -1}),
                              mesh, base.SHARDING_RULES)


def test_name_span_finds_the_names_tokens_in_the_prompt(loaded):
  tok = loaded.tokenizer
  fmt = chat_template.OwnFormat(tok)
  for ex in WorldTask(seed=0).examples("eval")[:20]:
    prompt = list(fmt.render_prompt(ex.messages))
    a, b = readout.name_span(tok, prompt, ex.messages[-1]["content"], ex.meta["entity"])
    lead = ex.messages[-1]["content"].split(ex.meta["entity"])[0]  # bytes: a space before it is a token of its own
    assert tok.decode(prompt[a:b]) == lead[len(lead.rstrip()):] + ex.meta["entity"]
    assert tok.decode(prompt[b - 1:b]) == ex.meta["entity"][-1]  # where name_state_probe reads the state
  assert readout.name_span(tok, prompt, "Who is it?", "Nobody Here") is None


class _Merging:
  """A tokenizer that merges "ab" into one token: a name ending in "a" before "b" tokenizes differently inside
  the question than on its own."""
  def encode(self, text):
    out, i = [], 0
    while i < len(text):
      if text.startswith("ab", i):
        out.append(1000)
        i += 2
      else:
        out.append(ord(text[i]))
        i += 1
    return out


def test_name_span_is_none_where_the_name_does_not_tokenize_alone():
  tok = _Merging()
  question = "Where is Ola bank?"  # "Ola" + " bank": no merge across; fine
  prompt = [5, 6] + tok.encode(question) + [7]
  a, b = readout.name_span(tok, prompt, question, "Ola")
  assert prompt[a:b] == tok.encode(" Ola")
  question = "Where is Olab?"  # the name "Ola" ends inside the merged "ab"
  assert readout.name_span(tok, [5] + tok.encode(question), question, "Ola") is None


def test_signals_match_a_direct_pass_of_each_sequence(loaded):
  task = WorldTask(seed=0, min_train_exposure=0)
  held = task.examples("eval")[:5]
  replies = ["She was born in 1950.", "I don't know.", "He is a baker.", "It is in Norland.", "x"]
  probe_rows = [{**ex.meta, "unknown": i % 2 == 0} for i, ex in enumerate(task.examples("train", None, 0))]
  got = readout.signals(loaded.model, loaded.params, loaded.tokenizer, task, held, replies, probe_rows,
                        samples=3, max_new_tokens=8, batch=32, seed=0)
  assert set(got) == set(readout.SIGNALS) and all(len(v) == 5 for v in got.values())
  fmt = chat_template.OwnFormat(loaded.tokenizer)

  @jax.jit
  def log_softmax(tokens):  # one sequence, right-padded to 160 (causal: the padding changes nothing before it)
    return jax.nn.log_softmax(loaded.model.apply({"params": loaded.params}, tokens[None])[0], -1)

  def next_logps(ids):  # row i: the log-probabilities of the token after ids[:i + 1]
    return np.asarray(log_softmax(jnp.asarray(np.pad(np.asarray(ids, np.int32), (0, 160 - len(ids))))))

  def logp(ids):
    return next_logps(ids)[np.arange(len(ids) - 1), np.asarray(ids[1:])]

  for i, (ex, reply) in enumerate(zip(held, replies)):
    r = fmt.render(list(ex.messages) + [{"role": "assistant", "content": reply}])
    assert loaded.tokenizer.decode(r.ids_T[1:][r.mask_T[1:] == 1]) == reply + "<|im_end|>"  # the reply's tokens
    lp = logp(r.ids_T)[np.flatnonzero(r.mask_T[1:])]
    assert got["reply_logprob"][i] == pytest.approx(lp.sum(), rel=1e-4, abs=1e-4)
    assert got["reply_min_prob"][i] == pytest.approx(np.exp(lp.min()), rel=1e-4, abs=1e-6)
    prompt = list(fmt.render_prompt(ex.messages))
    a, b = readout.name_span(loaded.tokenizer, prompt, ex.messages[-1]["content"], ex.meta["entity"])
    assert got["name_logprob"][i] == pytest.approx(logp(prompt)[a - 1:b - 1].mean(), rel=1e-4, abs=1e-4)
  # The same for the first example without any slicing of a whole pass: one prefix per name token.
  prompt = list(fmt.render_prompt(held[0].messages))
  a, b = readout.name_span(loaded.tokenizer, prompt, held[0].messages[-1]["content"], held[0].meta["entity"])
  direct = [next_logps(prompt[:j])[j - 1, prompt[j]] for j in range(a, b)]
  assert got["name_logprob"][0] == pytest.approx(float(np.mean(direct)), rel=1e-4, abs=1e-4)
  assert set(np.round(got["agreement"] * 3, 6)) <= {0.0, 1.0, 2.0, 3.0}
  assert np.isfinite(got["state_probe"]).all() and np.isfinite(got["name_state_probe"]).all()
  one_class = [{**r, "unknown": True} for r in probe_rows]  # nothing to fit: no score, never declined
  got = readout.signals(loaded.model, loaded.params, loaded.tokenizer, task, held, replies, one_class,
                        samples=1, max_new_tokens=4, batch=32, seed=0)
  assert np.isnan(got["state_probe"]).all() and np.isnan(got["name_state_probe"]).all()


def test_answer_lead_is_the_in_place_refusals_opening():
  task = WorldTask(seed=0)
  ex = next(e for e in task.examples("eval") if e.meta["attribute"] == "birth_year")
  assert refusal.answer_lead(ex.meta, "she") == "She was born in "
  assert refusal.refusal_reply(ex, "she", random.Random(0), "in_place").startswith("She was born in — ")
