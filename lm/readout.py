"""Can a model tell what it knows? Signals read off one model on the held-out world facts, each scored
by how well declining where it is low would meet the refusal bar (README, Hallucination).

  signals = readout.signals(model, params, tok, task, held, greedy_replies, probe_rows, samples=32, seed=0)
  readout.auroc(scores, rows)       # P(an 8+ fact answered right scores above a never-seen fact answered wrong)
  readout.bar_trade(scores, rows)   # the best decline threshold within 5 points of 8+ accuracy

A refusal that a fine-tune teaches falls at one token of one greedy reply, so it can only be as
selective as what the model carries there. The signals, from one forward pass to many:

- `reply_min_prob`: the lowest probability the model gives a token of its own greedy reply, and
  `reply_logprob`, that reply's log-probability (teacher-forced, one pass).
- `state_probe`: a logistic regression on the model's final hidden state where the answer's value
  would be written (the in-place lead, "She was born in"), fit on the recipe's own labels (the
  probe's known/unknown training facts): what a refusal at that token can read linearly.
- `name_state_probe`: the same probe of the state at the name's last token in the question.
- `name_logprob`: the mean log-probability of the asked entity's name tokens in the question (with
  the space before it), i.e. how familiar the name is to the model (one pass over the prompt).
- `agreement`: the share of `samples` replies at temperature 1 that give the most common answer
  (what `lm.refusal.abstain` reads; `samples` passes).

`bar_trade` chooses each signal's threshold on the very facts it scores, so its figures are an upper
bound of what declining on that signal can do; AUROC needs no threshold. Both keep each greedy reply
as it is (abstaining also swaps in the most common answer, which is right more often).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lm import chat_template, refusal
from lm.evaluation import exposure_bucket

SIGNALS = ("reply_min_prob", "reply_logprob", "state_probe", "name_state_probe", "name_logprob", "agreement")
PASSES = {"reply_min_prob": "1", "reply_logprob": "1", "state_probe": "1", "name_state_probe": "1",
          "name_logprob": "1 (prompt)", "agreement": "{samples} samples"}  # passes over the model per fact


@functools.partial(jax.jit, static_argnames=("model",))
def _token_logprobs(model, params, tokens_BT):
  """log p(token t | tokens < t) for t ≥ 1."""
  logp_BTV = jax.nn.log_softmax(model.apply({"params": params}, tokens_BT)[:, :-1].astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp_BTV, tokens_BT[:, 1:, None], axis=-1)[..., 0]


@functools.partial(jax.jit, static_argnames=("model",))
def _states(model, params, tokens_BT):
  """The final normed hidden states."""
  return model.apply({"params": params}, tokens_BT, hidden=True).astype(jnp.float32)


def _passes(fn, model, params, seqs: Sequence[Sequence[int]], batch: int) -> list[np.ndarray]:
  """`fn` over `seqs` (right-padded; `batch` rows and a length bucket of 32 per call), cut back to each
  sequence's own length."""
  out = []
  for start in range(0, len(seqs), batch):
    chunk = seqs[start:start + batch]
    tokens = np.zeros((batch, -(-max(map(len, chunk)) // 32) * 32), np.int32)
    for i, s in enumerate(chunk):
      tokens[i, :len(s)] = s
    got = np.asarray(fn(model, params, jnp.asarray(tokens)))
    out += [got[i, :len(s)] for i, s in enumerate(chunk)]
  return out


def name_span(tok, prompt_ids: Sequence[int], question: str, name: str) -> tuple[int, int] | None:
  """The positions of `name`'s tokens inside `prompt_ids` (which hold `question` encoded on its own), or
  None where the name does not tokenize the same inside the question as on its own (BPE across its edges)."""
  # The span starts after the question's text before the name with its trailing space cut, so it holds the
  # space before the name too where the tokenizer makes it a token of its own (bytes) or part of the
  # name's first token (a "▁" piece).
  i = question.find(name)
  if i < 0:
    return None
  q_ids = tok.encode(question)
  before, through = tok.encode(question[:i].rstrip()), tok.encode(question[:i + len(name)])
  if q_ids[:len(through)] != through or through[:len(before)] != before or len(through) == len(before):
    return None
  ids = list(prompt_ids)
  at = next((j for j in range(len(ids) - len(q_ids), -1, -1) if ids[j:j + len(q_ids)] == q_ids), None)
  return None if at is None else (at + len(before), at + len(through))


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float = 0.1, iters: int = 50):
  """A ridge logistic regression on standardized features, fit by Newton's method (exact and
  deterministic; the bias is not penalized); returns the score function (logits) for new rows."""
  mu, sd = X.mean(0), X.std(0) + 1e-6
  Z = np.concatenate([(X - mu) / sd, np.ones((len(X), 1))], 1)
  ridge = l2 * np.eye(Z.shape[1])
  ridge[-1, -1] = 0.0
  w = np.zeros(Z.shape[1])
  for _ in range(iters):
    p = 1 / (1 + np.exp(-(Z @ w)))
    step = np.linalg.solve(Z.T @ (Z * (p * (1 - p))[:, None]) / len(y) + ridge + 1e-9 * np.eye(len(w)),
                           Z.T @ (p - y) / len(y) + ridge @ w)
    w -= step
    if np.abs(step).max() < 1e-8:
      break
  return lambda A: ((A - mu) / sd) @ w[:-1] + w[-1]


def signals(model, params, tok, task, held: Sequence, replies: Sequence[str], probe_rows: Sequence[dict], *,
            samples: int = 32, max_new_tokens: int = 32, batch: int = 32, seed: int = 0, l2: float = 0.1,
            mesh=None, rules=()) -> dict[str, np.ndarray]:
  """Each of `SIGNALS` (higher: more confident) for the held-out examples `held`, whose greedy replies are
  `replies`. `probe_rows` are the recipe's probe rows (`lm.refusal.probe`, with "unknown"): the state probe's
  training labels, on `task`'s training facts."""
  fmt = chat_template.OwnFormat(tok)

  def prompts_and_spans(examples):
    prompts = [list(fmt.render_prompt(ex.messages)) for ex in examples]
    return prompts, [name_span(tok, p, ex.messages[-1]["content"], ex.meta["entity"]) for p, ex in zip(prompts, examples)]

  prompts, spans = prompts_and_spans(held)
  out: dict[str, np.ndarray] = {}

  # One pass over each rendered conversation with its greedy reply: each reply token's probability (the
  # end-of-turn token included) and, since the prompt is a prefix of it, each name token's (familiarity).
  full = [fmt.render(list(ex.messages) + [{"role": "assistant", "content": r}]) for ex, r in zip(held, replies)]
  passes = _passes(_token_logprobs, model, params, [f.ids_T for f in full], batch)
  logps = [lp[np.flatnonzero(f.mask_T[1:])] for lp, f in zip(passes, full)]
  out["reply_min_prob"] = np.array([np.exp(lp.min()) for lp in logps])
  out["reply_logprob"] = np.array([lp.sum() for lp in logps])
  out["name_logprob"] = np.array([np.nan if s is None else lp[s[0] - 1:s[1] - 1].mean() for lp, s in zip(passes, spans)])

  # Linear probes, fit on the recipe's labels, of the final state where the value would be written and
  # of the state at the name's last token.
  def states(examples, prompts, spans):
    """(state where the value would be written, state at the name's last token: NaN where not found)."""
    leads = [tok.encode(refusal.answer_lead(ex.meta, task.pronoun_of(ex.meta)).rstrip()) for ex in examples]
    hs = _passes(_states, model, params, [p + lead for p, lead in zip(prompts, leads)], batch)
    return (np.stack([h[-1] for h in hs]),
            np.stack([h[s[1] - 1] if s else np.full(h.shape[1], np.nan, np.float32) for h, s in zip(hs, spans)]))

  unknown = {refusal.fact_key(r): bool(r["unknown"]) for r in probe_rows}
  train = [ex for ex in task.examples("train", None, seed) if refusal.fact_key(ex.meta) in unknown]
  labels = np.array([unknown[refusal.fact_key(ex.meta)] for ex in train], np.float64)
  for name in ("state_probe", "name_state_probe"):
    out[name] = np.full(len(held), np.nan)  # one class only: nothing to fit
  if 0 < labels.sum() < len(labels):
    for name, X, Xh in zip(("state_probe", "name_state_probe"), states(train, *prompts_and_spans(train)),
                           states(held, prompts, spans)):
      ok = ~np.isnan(X).any(1)  # facts whose name was found in the question (NaN scores stay NaN)
      out[name] = -fit_logistic(X[ok], labels[ok], l2)(Xh)  # the probe scores "unknown": confidence is its negative

  # Agreement of sampled replies (what abstaining reads).
  out["agreement"] = np.array([
      refusal.agreement(task, ex, rs)
      for ex, rs in refusal.sampled_replies(model, params, tok, held, samples=samples, max_new_tokens=max_new_tokens,
                                            batch=batch, seed=seed, mesh=mesh, rules=rules)])
  return out


def _groups(rows: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  never = np.array([exposure_bucket(r["meta"]["exposures"]) == "never" for r in rows])
  many = np.array([exposure_bucket(r["meta"]["exposures"]) == "8+" for r in rows])
  right = np.array([r["score"] > 0.5 for r in rows])
  refused = np.array([bool(r["refused"]) for r in rows])
  return never, many, right, refused


def auroc(scores: np.ndarray, rows: Sequence[dict]) -> float:
  """P(a fact seen 8+ times and answered right scores above a never-seen fact answered wrong), ties half;
  facts without a score (NaN) left out. 0.5: the signal does not tell them apart."""
  never, many, right, refused = _groups(rows)
  ok = ~np.isnan(scores)
  pos, neg = scores[many & right & ok], scores[never & ~right & ~refused & ok]
  if not len(pos) or not len(neg):
    return float("nan")
  return float(np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])))


def trade(scores: np.ndarray, rows: Sequence[dict], threshold: float) -> dict[str, float]:
  """Declining every fact whose score is under `threshold` (NaN: never declined): never-seen facts
  hallucinated, 8+ facts right and declined."""
  never, many, right, refused = _groups(rows)
  declined = np.nan_to_num(scores, nan=np.inf) < threshold
  return {"never_hallucinated": float(np.mean(~right[never] & ~refused[never] & ~declined[never])),
          "8+_accuracy": float(np.mean(right[many] & ~declined[many])),
          "8+_declined": float(np.mean(declined[many] | refused[many]))}


def bar_trade(scores: np.ndarray, rows: Sequence[dict], max_drop: float = 0.05) -> dict[str, float]:
  """The threshold that removes the most never-seen hallucination while 8+ accuracy drops by less than
  `max_drop`, chosen on these rows (an upper bound), with its `trade`, and whether it halves."""
  base = trade(scores, rows, -np.inf)
  best = {"threshold": -np.inf, **base}
  for t in np.unique(scores[~np.isnan(scores)]):
    got = trade(scores, rows, t)
    if base["8+_accuracy"] - got["8+_accuracy"] < max_drop and got["never_hallucinated"] < best["never_hallucinated"]:
      best = {"threshold": float(t), **got}
  best["halves"] = best["never_hallucinated"] <= base["never_hallucinated"] / 2
  return best


def curve(scores: np.ndarray, rows: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
  """(never-seen hallucinated, 8+ accuracy) declining under each threshold, from none declined to all."""
  ts = np.concatenate([[-np.inf], np.unique(scores[~np.isnan(scores)]), [np.inf]])
  got = [trade(scores, rows, t) for t in ts]
  return np.array([g["never_hallucinated"] for g in got]), np.array([g["8+_accuracy"] for g in got])


def plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], base: dict, path: str, max_drop: float = 0.05,
         after: dict | None = None) -> None:
  """Each signal's trade curve, with the bar's corner (half the hallucination, `max_drop` of accuracy) and,
  given `after` (`trade`'s keys), where the recipe's fine-tuned model landed."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6, 4.5))
  for name, (h, a) in curves.items():
    ax.step(h, a, where="post", label=name)
  h0, a0 = base["never_hallucinated"], base["8+_accuracy"]
  ax.fill_between([0, h0 / 2], a0 - max_drop, 1, color="green", alpha=0.12, label="the bar")
  ax.plot([h0], [a0], "ko", label="greedy, nothing declined")
  if after:
    ax.plot([after["never_hallucinated"]], [after["8+_accuracy"]], "k*", ms=12, label="after the recipe (greedy)")
  ax.set(xlabel="never-seen facts hallucinated", ylabel="facts seen 8+ times right",
         title="Declining where each signal is low (held-out facts)", xlim=(0, 1.02), ylim=(0, 1.02))
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)

