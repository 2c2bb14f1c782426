"""The hidden "gold" preference over replies to world questions: the synthetic human labeller.

RLHF here is measured the way Gao et al. (2022) measure it: a gold reward plays
the people who rank replies, a reward model learns only from the rankings it
produced (`experiments/gold_rankings.py` writes them), and RL against the
reward model is scored afterwards by the gold reward it never saw. The gold
score of one reply (`score`) adds up what a careful labeller wants:

  correct      +1.0   the world task's verifier accepts the answer (lm/tasks/world.py)
  ended        +0.5   the turn ended with <|im_end|> rather than running into the limit
  tidy         +0.25  one capitalised sentence-like reply ending in "." (polite, well formed)
  concise      −0.05  per word beyond the ideal reply's length (its `target`)
  repetition   −1.0 × the share of repeated word bigrams ("the the the" → close to −1)

Only the verifier and these counts are read: no model, so a reply's gold score is
the same whoever asks. Ranking k replies by it gives ties (equal scores), which
the ranked JSONL keeps as ties.
"""
from __future__ import annotations

import re

from lm.tasks.base import Example

WEIGHTS = {"correct": 1.0, "ended": 0.5, "tidy": 0.25, "concise": -0.05, "repetition": -1.0}
_WORD = re.compile(r"\w+")


def repetition(text: str) -> float:
  """The share of word bigrams that already occurred earlier in the text (0 for under 3 words)."""
  words = [w.lower() for w in _WORD.findall(text)]
  bigrams = list(zip(words, words[1:]))
  if len(bigrams) < 2:
    return 0.0
  return 1.0 - len(set(bigrams)) / len(bigrams)


def tidy(text: str) -> bool:
  """One reply that starts with a capital letter and ends with a full stop, nothing after it."""
  t = text.strip()
  return bool(t) and t[0].isupper() and t.endswith(".") and "\n" not in t


def features(text: str, ended: bool, example: Example, task) -> dict[str, float]:
  """The gold score's terms for one reply (before their weights)."""
  extra = len(_WORD.findall(text)) - len(_WORD.findall(example.target))
  return {"correct": float(task.reward(text, example)), "ended": float(ended), "tidy": float(tidy(text)),
          "concise": float(max(0, extra)), "repetition": repetition(text)}


def score(text: str, ended: bool, example: Example, task) -> float:
  """The gold reward of a reply: the weighted sum of its `features` (ideal reply: 1.75)."""
  return float(sum(WEIGHTS[k] * v for k, v in features(text, ended, example, task).items()))


def ranking(scores) -> list:
  """Response indices best first, equal scores tied in an inner list (the ranked JSONL's "ranking")."""
  levels: dict[float, list[int]] = {}
  for i, s in enumerate(scores):
    levels.setdefault(round(float(s), 6), []).append(i)
  return [ids[0] if len(ids) == 1 else ids for _, ids in sorted(levels.items(), key=lambda kv: -kv[0])]
