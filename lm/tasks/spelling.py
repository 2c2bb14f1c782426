"""Spelling a word letter by letter, and counting a letter in a word ("How many r in strawberry?").

  task = SpellingTask(kinds=("count", "spell"))
  task.examples("eval", n=200, seed=0)

Targets spell the word first ("s-t-r-a-w-b-e-r-r-y"), then for a count walk
through it numbering each match, and end with "Answer: <count>" or
"Answer: <spelling>". Rewards: a count question checks the last number of the
completion; a spelling question checks the last dash-separated spelling
(case-insensitive). About one letter in five asked about is not in the word
(the answer is 0).

Splits are by word: a word is held out when its stable hash says so (about
one in `eval_every`), whatever the seed. The list mixes everyday words,
words with doubled letters, and the 40 words of the pretraining spelling
lessons (`synthetic_text.SPELLING_WORDS`). `made_up_words = N` adds N
pronounceable made-up words ("brintavel") to the training split only: with
~145 training words a small model memorises them and, asked about a new word,
writes a memorised one into its answer or its tool call; thousands of words it
cannot memorise teach it to copy the word it was given.
"""
from __future__ import annotations

import dataclasses
import functools
import random
import re
import string
from typing import Callable

from lm.errors import UserError
from lm.prep import synthetic_text as T
from lm.tasks.base import Example, check_split, last_number, stable_hash, take_cycled

NAME = "spelling"
WORDS = tuple(sorted({w.lower() for w in T.SPELLING_WORDS} | set("""
strawberry banana mississippi bookkeeper balloon coffee letter apple pepper success address assessment
possession cheese butter summer winter spring autumn garden window kitchen bottle paper pencil rabbit
squirrel elephant giraffe penguin dolphin tomato potato cucumber lemon orange cherry blueberry raspberry
chocolate vanilla cinnamon mountain river ocean island valley forest desert meadow village harbour bridge
castle tunnel station airport library hospital teacher doctor student picture kettle blanket pillow mirror
ladder hammer scissors umbrella bicycle carriage engine rocket planet universe galaxy thunder lightning rainbow
weather morning evening yesterday together different beautiful wonderful terrible possible impossible
important interesting remember forget happiness business goodness sweetness illness coffee committee
assassin occasion embarrassment millionaire accessory parallel balloonist woodpecker grasshopper
hippopotamus alligator caterpillar butterfly dragonfly pineapple watermelon peppermint marshmallow
spaghetti broccoli zucchini avocado mushroom cabbage carrot onion garlic ginger almond hazelnut peanut
""".split())))
_ONSETS = ("b", "br", "c", "ch", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "l", "m", "n", "p", "pl", "qu",
           "r", "s", "sh", "st", "t", "th", "tr", "v", "w", "y", "z", "")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ee", "oo", "ou")
_CODAS = ("", "", "", "n", "r", "l", "s", "t", "m", "ck", "ng", "nd", "st")


def non_words(n: int, draw: Callable[[], str], max_len: int) -> list[str]:
  """Up to `n` distinct strings of 4..`max_len` letters from `draw()`, none a task word, in draw order
  (fewer only if 100·n draws do not find them)."""
  real, out = set(WORDS), {}
  for _ in range(100 * n):
    if len(out) == n:
      break
    w = draw()
    if 4 <= len(w) <= max_len and w not in real:
      out[w] = None
  return list(out)


@functools.lru_cache(maxsize=8)
def made_up(n: int, salt: str = "made_up") -> tuple[str, ...]:
  """`n` distinct pronounceable non-words of 2–4 syllables (none a task word), the same for every
  caller with the same `salt`."""
  rng = random.Random(f"{NAME}/{salt}")
  syllable = lambda: rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)  # noqa: E731
  return tuple(non_words(n, lambda: "".join(syllable() for _ in range(rng.choice((2, 2, 3, 3, 4)))), 14))


COUNT_PROMPTS = ("How many times does the letter {c} appear in {w}?", "How many {c}'s are in the word {w}?",
                 "Count the letter {c} in the word {w}.", "How many letters {c} does {w} have?")
SPELL_PROMPTS = ("Spell the word {w} letter by letter.", "How do you spell {w}? Give it letter by letter.",
                 "Write out the letters of {w}, separated by dashes.")
_SPELLING = re.compile(r"(?<![A-Za-z-])[A-Za-z](?:-[A-Za-z])+(?![A-Za-z-])")


def spelled(word: str) -> str:
  return "-".join(word)


def count_steps(word: str, letter: str) -> str:
  """Spell the word, number every match while walking through it, then the count."""
  walk, k = [], 0
  for ch in word:
    if ch == letter:
      k += 1
      walk.append(f"{ch} ({k})")
    else:
      walk.append(ch)
  times = "time" if k == 1 else "times"
  return "\n".join([f"Spell {word} letter by letter: {spelled(word)}.",
                    f"Walk through it, counting the letter {letter}: {', '.join(walk)}.",
                    f"The letter {letter} appears {k} {times} in {word}.", f"Answer: {k}"])


def spell_steps(word: str) -> str:
  return "\n".join([f"The word {word} has {len(word)} letters: {spelled(word)}.", f"Answer: {spelled(word)}"])


@dataclasses.dataclass
class SpellingTask:
  kinds: tuple = ("count", "spell")   # question kinds, drawn uniformly
  absent_letter_rate: float = 0.2     # share of count questions about a letter the word lacks
  eval_every: int = 5                 # about 1 in this many words is held out
  made_up_words: int = 0              # made-up words added to the training split (never evaluated)
  name: str = NAME

  def __post_init__(self):
    bad = [k for k in self.kinds if k not in ("count", "spell")]
    if bad or not self.kinds:
      raise UserError(f"spelling task: kinds {bad or 'empty'} not among ('count', 'spell')")
    if not 0 <= self.made_up_words <= 100_000:
      raise UserError(f"spelling task: made_up_words {self.made_up_words} is not in [0, 100000]")

  def words(self, split: str) -> list[str]:
    check_split(split)
    held_out = lambda w: stable_hash(f"{NAME}/{w}") % self.eval_every == 0
    words = [w for w in WORDS if held_out(w) == (split == "eval")]
    return words if split == "eval" else words + list(made_up(self.made_up_words))

  def examples(self, split: str, n: int | None = None, seed: int = 0) -> list[Example]:
    rng = random.Random(f"{NAME}/{split}/{seed}")
    return [self._example(rng, w, split) for w in take_cycled(self.words(split), n, rng)]

  def _example(self, rng: random.Random, word: str, split: str) -> Example:
    kind = rng.choice(self.kinds)
    if kind == "spell":
      k = rng.randrange(len(SPELL_PROMPTS))
      return Example(NAME, [{"role": "user", "content": SPELL_PROMPTS[k].format(w=word)}], spelled(word),
                     spell_steps(word), {"kind": kind, "word": word, "template": k, "split": split})
    absent = sorted(set(string.ascii_lowercase) - set(word))
    letter = rng.choice(absent) if rng.random() < self.absent_letter_rate else rng.choice(sorted(set(word)))
    k = rng.randrange(len(COUNT_PROMPTS))
    return Example(NAME, [{"role": "user", "content": COUNT_PROMPTS[k].format(c=letter, w=word)}],
                   str(word.count(letter)), count_steps(word, letter),
                   {"kind": kind, "word": word, "letter": letter, "template": k, "split": split})

  def reward(self, completion: str, example: Example) -> float:
    if example.meta["kind"] == "count":
      return float(last_number(completion) == int(example.reference))
    found = _SPELLING.findall(completion)
    return float(bool(found) and found[-1].lower() == example.reference)
