"""The Llama 3 refusal recipe (section 4.3.6), on the synthetic world: teach "I don't know" exactly
where the model does not know, found by probing the model itself.

  rows = refusal.probe(model, params, tok, task, examples, samples=8, ...)   # each fact, n answers, graded
  unknown = refusal.mark_unknown(rows, max_correct=1)                        # consistently wrong
  convs = refusal.conversations(task, unknown, n=3000, seed=0)               # answers or refusals

1. Probe: every fact of the world task's "train" split (its entities are never
   asked about in held-out evaluation), including facts the pretraining text never
   states, is asked once and answered `samples` times at temperature 1 by the
   rollout engine (one prefill per question); the task's verifier grades each.
2. A fact is "unknown" when at most `max_correct` of its answers are right (the
   model's answers are consistently wrong) or, with `min_agreement`, when its
   answers disagree (the most common one is under that share); otherwise "known".
3. SFT data: the world questions again, the ideal reply to a known fact its
   answer and to an unknown fact a refusal, in varied wording (`REFUSALS`).
   Fine-tuning on these (experiments/refusal.py) teaches refusal where the model
   itself is wrong, not where a designer guessed it would be.

`is_refusal(text)` (from `lm.evaluation`) recognises the refusals (all of
`REFUSALS` and common paraphrases, tested); the held-out evaluation counts, per fact exposure,
refusals and hallucinations (replies that are neither right nor a refusal:
confident wrong answers).
"""
from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Sequence

import numpy as np

from lm import chat_template, evaluation, grpo
from lm.evaluation import is_refusal
from lm.prep import synthetic
from lm.tasks.base import Example, take_cycled
from lm.tasks.world import ANSWERS, ASKED, written_value

# What the ideal assistant says when it does not know; "{thing}" names what was asked.
REFUSALS = (
    "I don't know {thing}.",
    "I'm not sure about {thing}; I have no reliable information on it.",
    "Sorry, I don't know {thing}.",
    "I can't say: I don't know {thing}.",
    "I don't have reliable information about {thing}.",
    "I'm not sure. I don't know {thing}.",
)
THING = {
    ("person", "birth_year"): "{their} birth year", ("person", "city"): "which city {they} is from",
    ("person", "profession"): "what {they} does for a living", ("person", "employer"): "whom {they} works for",
    ("city", "country"): "which country this city is in", ("company", "industry"): "this company's industry",
    ("company", "founded"): "when this company was founded", ("company", "city"): "where this company is based",
}
STYLES = ("lead", "in_place", "in_value")


def refusal_reply(example: Example, pronoun: str, rng: random.Random, style: str = "lead",
                  shared: str = "") -> str:
  """A refusal to `example`'s question in one of `REFUSALS`' wordings, naming what was asked
  (`pronoun`: "she" or "he" for a person). `style="lead"` refuses from the reply's first token;
  `"in_place"` starts the answer's own sentence and refuses where the value would come ("She was born
  in — I don't know her birth year."): the choice is then made at the token where a model that knows
  the fact would write it, not before. `"in_value"` also writes `shared`, the start that every value of
  the attribute shares (`shared_starts`: "She was born in 19 — I don't know her birth year."), so the
  choice falls at the first token that tells the values apart: after "in" a year's next token is the
  same for every year. With `shared=""` it is `"in_place"`."""
  key = (example.meta["type"], example.meta["attribute"])
  text = rng.choice(REFUSALS).format(thing=THING[key].format(they=pronoun, their={"he": "his"}.get(pronoun, "her")))
  if style == "lead":
    return text
  if style not in STYLES:
    raise ValueError(f"refusal style {style!r} is not one of {STYLES}")
  # The answer's own sentence up to its value, and for in_value what all values share.
  return f"{(answer_lead(example.meta, pronoun) + (shared if style == 'in_value' else '')).rstrip()} — {text}"


def answer_lead(meta: dict, pronoun: str) -> str:
  """The answer's own sentence, as the task writes it, up to its value ("She was born in "): where an
  in-place refusal falls, and where a model that knows the fact writes it."""
  return ANSWERS[meta["type"], meta["attribute"]].format(Pronoun=pronoun.capitalize(), value="\0",
                                                         a_value="\0").split("\0")[0]


def shared_starts(world, min_share: float = 0.9) -> dict[tuple[str, str], str]:
  """Per asked (type, attribute): the longest start that at least `min_share` of its values in `world`
  share as the answer writes them, cut back to a whole word unless it ends in a digit ("19" for birth
  years from 1930 to 2000, "a " for "a pharmacist" and "an architect", "" for names): where
  `style="in_value"` puts the refusal."""
  if not 0 < min_share <= 1:
    raise ValueError(f"min_share={min_share} must be in (0, 1]")
  written = defaultdict(list)
  for row in world.facts():
    key = (row["type"], row["attribute"])
    if key in ANSWERS:  # the asked attributes
      written[key].append(written_value(key, row["value"]))
  starts = {}
  for key, values in written.items():
    start = ""
    for n in range(1, max(map(len, values)) + 1):
      top, count = Counter(v[:n] for v in values).most_common(1)[0]
      if count < min_share * len(values):
        break
      start = top
    if start and not start[-1].isdigit() and not start[-1].isspace():  # "San" of "San Remo": no cut inside a word
      start = start[:start.rfind(" ") + 1]
    starts[key] = start
  return starts


def sampled_replies(model, params, tok, examples, *, samples, max_new_tokens, batch, seed, mesh, rules):
  """(example, its `samples` replies at temperature 1) for every example, one prefill per question."""
  fmt = chat_template.OwnFormat(tok)
  prompts = [fmt.render_prompt(ex.messages).tolist() for ex in examples]
  for start, n, _, out in grpo.sampled_chunks(model, params, tok, prompts, batch, samples, max_new_tokens,
                                              seed=seed, mesh=mesh, rules=rules, temperature=1.0):
    for i, ex in enumerate(examples[start:start + n]):
      yield ex, [grpo.completion_text(out, i * samples + j, tok)[0] for j in range(samples)]


def answer_counts(task, ex, replies) -> Counter:
  """How many replies give each answer (refusals and replies naming none agree with nothing)."""
  answers = Counter(task.answer(text, ex) for text in replies if not is_refusal(text))
  answers.pop(frozenset(), None)
  return answers


def probe(model, params, tok, task, examples: Sequence[Example], *, samples: int, max_new_tokens: int,
          batch: int, seed: int, mesh=None, rules=()) -> list[dict]:
  """`samples` answers at temperature 1 to each example (one prefill per question), graded by the
  task: one row per example with its fact, exposures, the number right, the most common answer's
  share (agreement) and two of its replies."""
  rows = []
  for ex, replies in sampled_replies(model, params, tok, examples, samples=samples, max_new_tokens=max_new_tokens,
                                      batch=batch, seed=seed, mesh=mesh, rules=rules):
    scores = [task.reward(text, ex) for text in replies]
    rows.append({"entity": ex.meta["entity"], "type": ex.meta["type"], "attribute": ex.meta["attribute"],
                 "exposures": ex.meta["exposures"], "reference": ex.reference, "question": ex.messages[-1]["content"],
                 "correct": int(sum(s > 0.5 for s in scores)), "samples": samples,
                 "refused": int(sum(is_refusal(t) for t in replies)),
                 "agreement": agreement(task, ex, replies), "replies": replies[:2]})
  return rows


def agreement(task, ex, replies: Sequence[str]) -> float:
  """The most common answer's share of `replies` (0 when none gives an answer): what self-consistency reads."""
  return max(answer_counts(task, ex, replies).values(), default=0) / len(replies)


ABSTAIN_REPLY = "I don't know."


def abstained_reply(task, ex, replies: Sequence[str], min_share: float) -> tuple[str, float]:
  """(a reply giving the most common answer, or `ABSTAIN_REPLY` when under `min_share` of `replies` give it;
  that answer's share)."""
  answers = answer_counts(task, ex, replies)
  top, count = answers.most_common(1)[0] if answers else (None, 0)
  share = count / len(replies)
  if share < min_share or not answers:
    return ABSTAIN_REPLY, share
  return next(t for t in replies if not is_refusal(t) and task.answer(t, ex) == top), share


def abstain(model, params, tok, task, examples: Sequence[Example], *, samples: int, min_share: float,
            max_new_tokens: int, batch: int, seed: int, mesh=None, rules=()) -> list[dict]:
  """Abstention at inference (self-consistency): `samples` replies at temperature 1 to each question; the
  reply is one that gives the most common answer when at least `min_share` of the samples give it, else
  `ABSTAIN_REPLY`. Rows as `evaluation.run_tasks` writes them (so `evaluation.summarize` counts
  accuracy, refusals and hallucinations per exposure), plus the answer's share."""
  rows = []
  for ex, replies in sampled_replies(model, params, tok, examples, samples=samples, max_new_tokens=max_new_tokens,
                                      batch=batch, seed=seed, mesh=mesh, rules=rules):
    text, share = abstained_reply(task, ex, replies, min_share)
    meta = ex.meta
    rows.append({"task": ex.task, "group": evaluation.exposure_bucket(meta["exposures"]), "format": True,
                 "score": float(task.reward(text, ex)), "refused": is_refusal(text), "reply": text,
                 "reference": ex.reference, "tokens": 0, "meta": meta, "share": share})
  return rows


def fact_key(meta_or_row: dict) -> tuple[str, str, str]:
  return meta_or_row["type"], meta_or_row["entity"], meta_or_row["attribute"]


def mark_unknown(rows: Sequence[dict], max_correct: int, min_agreement: float = 0.0) -> set[tuple[str, str, str]]:
  """The facts whose probe answers were right at most `max_correct` times (consistently wrong), and,
  with `min_agreement` > 0, those whose most common answer was given by fewer than that share of the
  samples (the model's own answers disagree: what self-consistency reads at inference)."""
  return {fact_key(r) for r in rows
          if r["correct"] <= max_correct or r.get("agreement", 1.0) < min_agreement}


def made_up_people(world, n: int, seed: int) -> list[dict]:
  """Fact rows (`World.facts()`'s form, value None) about `n` people who are not in the world and so
  never in any text the model read: every answer about them would be made up."""
  rng = random.Random(f"refusal/made_up/{seed}")
  taken = {p["name"] for p in world.people}
  names = synthetic._unique_names(n, lambda: synthetic._person_name(rng), taken)
  return [{"type": "person", "entity": name, "attribute": attribute, "value": None, "exposures": 0,
           "pronoun": pronoun} for name, pronoun in zip(names, rng.choices(("she", "he"), k=n))
          for attribute in ASKED["person"]]


def conversations(task, unknown: set, n: int, seed: int, made_up: int = 0, style: str = "lead",
                  refusal_share: float = 0.0, prior: float = 0.0) -> list[list[dict]]:
  """`n` world questions over every probed fact (train split, exposure 0 included) and the facts of
  `made_up` people who do not exist, cycled in a seeded order with random phrasings: the answer for a
  known fact, a refusal for an unknown or made-up one. `refusal_share` > 0 sets the share of the `n`
  drawn from the unknown and made-up facts (each side cycled on its own, then shuffled together; with no
  unknown fact, none); 0: the probe's own proportion. `prior` > 0: a known fact's conversation refuses
  too with that probability, so no fact's refusal is a label to memorise (README, Hallucination)."""
  rng = random.Random(f"refusal/{seed}")
  rows = task.facts("train") + made_up_people(task.world, made_up, seed)
  refused = lambda row: row["value"] is None or fact_key(row) in unknown  # noqa: E731
  if refusal_share > 0:
    no, yes = [r for r in rows if refused(r)], [r for r in rows if not refused(r)]
    k = 0 if not no else n if not yes else round(n * refusal_share)  # refusals among the n
    picked = list(take_cycled(no, k, rng)) + list(take_cycled(yes, n - k, rng))
    rng.shuffle(picked)
  else:
    picked = take_cycled(rows, n, rng)  # lazily: each cycle's shuffle and the phrasings share one rng
  shared = shared_starts(task.world) if style == "in_value" else {}
  out = []
  for row in picked:
    ex = task.example(row, rng, "train")
    if refused(row) or (prior > 0 and rng.random() < prior):
      reply = refusal_reply(ex, task.pronoun_of(row), rng, style, shared.get((row["type"], row["attribute"]), ""))
    else:
      reply = ex.target
    out.append(ex.messages + [{"role": "assistant", "content": reply}])
  return out


def probe_table(rows: Sequence[dict], unknown: set) -> list[str]:
  """Markdown: per exposure bucket, facts probed, mean share of right answers, share marked unknown."""
  by: dict[str, list[dict]] = defaultdict(list)
  for r in rows:
    by[evaluation.exposure_bucket(r["exposures"])].append(r)
  lines = ["| seen in pretraining | facts probed | answers right | marked unknown (→ refusal) |", "|---|---|---|---|"]
  for _, _, name in evaluation.EXPOSURE_BUCKETS:
    group = by.get(name, [])
    if group:
      right = np.mean([r["correct"] / r["samples"] for r in group])
      share = np.mean([fact_key(r) in unknown for r in group])
      lines.append(f"| {name} | {len(group)} | {right:.3f} | {share:.3f} |")
  return lines


SEED_ROWS = (("never", "hallucinated"), ("never", "refused"), ("never", "accuracy"), ("once", "hallucinated"),
             ("once", "refused"), ("2", "hallucinated"), ("4", "accuracy"), ("4", "refused"), ("8+", "accuracy"),
             ("8+", "refused"), ("8+", "hallucinated"), (None, "accuracy"), (None, "refused"), (None, "hallucinated"))


def spread_cell(values: np.ndarray) -> str:
  """A table cell over runs: mean ± std [each run's value]."""
  return f"{values.mean():.3f} ± {values.std():.3f} [{', '.join(f'{x:.3f}' for x in values)}]"


def seed_table(befores: Sequence[dict], afters: Sequence[dict]) -> tuple[list[str], dict]:
  """Markdown: per (exposure group, figure), before and after as mean ± std over runs, and the change."""
  lines = ["| held-out facts seen | figure | before | after | change |", "|---|---|---|---|---|"]
  summary = {}
  for group, figure in SEED_ROWS:
    key = f"eval/world/seen_{group}/{figure}" if group else f"eval/world/{figure}"
    if not all(key in r for r in list(befores) + list(afters)):
      continue
    b = np.array([r[key] for r in befores])
    a = np.array([r[key] for r in afters])
    summary[key] = {"before": b.tolist(), "after": a.tolist()}
    lines.append(f"| {group or 'all'} | {figure} | {spread_cell(b)} | {spread_cell(a)} | {(a - b).mean():+.3f} |")
  return lines, summary
