"""Copy drills: pretraining documents that can only be predicted by copying from the context.

  copy_drills.documents(n=400, seed=0)  → ["Word games, list 1. Today we practise copying ...", ...]

Each document names eight made-up words ("brintavel", or "ionurment" glued
from a tokenizer's own pieces) and then uses each of them again, two or three
times, in short sentences, bare (" brintavel") and in double quotes
('"brintavel"', the form a Python string takes). The words are
new in every document, so after the first mention the only way to predict a
word's pieces is to copy them from earlier in the context.

Why: the world base model sees its 132k shard tokens ~38 times and fits them
without ever copying (the names it appears to copy are built from a few dozen
known parts). Tool use needs copying: a letter-counting call
`print("airport".count("r"))` copies the asked word out of the prompt, and an
answer read off a search result copies the fact. `lm.probes.copy_gain` measures
the skill. No drill word is a word the spelling task asks about.
"""
from __future__ import annotations

import random
import re
from typing import Sequence

from lm.errors import UserError
from lm.tasks import spelling

WORDS_PER_DOC = 8
SENTENCES = ('Word {k}: "{w}". Read {w} slowly, then say {w} again.',
             'The invented word "{w}" has {n} letters. Write it twice: {w}, {w}.',
             '"{w}" starts with {f} and ends with {l}; when you hear {w}, answer "{w}".',
             'Next comes {w}. Copy it exactly: "{w}". Then {w} once more.',
             'Say "{w}". The word {w} means nothing yet, so {w} is yours to define.')


def word_pieces(tok) -> list[str]:
  """The tokenizer's lowercase alphabetic pieces (a leading space dropped): what drill words are made of."""
  pieces = {tok.decode([i]).strip() for i in range(tok.vocab_size)}
  return sorted(p for p in pieces if re.fullmatch(r"[a-z]{2,}", p))


def _piece_words(n: int, pieces: Sequence[str], rng: random.Random) -> list[str]:
  words = spelling.non_words(n, lambda: "".join(rng.choice(pieces) for _ in range(rng.choice((2, 2, 3)))), 16)
  if len(words) < n:
    raise UserError(f"copy drills: {len(pieces)} word pieces make only {len(words)} distinct words, {n} needed; "
                    f"lower config.shards.copy_drills")
  return words


def documents(n: int, seed: int = 0, pieces: Sequence[str] = ()) -> list[str]:
  """`n` drill documents, a function of (n, seed, pieces) only. Words are 2–3 random `pieces` glued
  together (a tokenizer's `word_pieces`: every part of its vocabulary gets copied), or without
  pieces pronounceable made-up words (`spelling.made_up`)."""
  if not 0 <= n <= 100_000:
    raise UserError(f"copy drills: {n} documents is not in [0, 100000]")
  rng = random.Random(f"copy_drills/{seed}")
  if pieces:
    words = _piece_words(n * WORDS_PER_DOC, list(pieces), rng)
  else:
    words = list(spelling.made_up(n * WORDS_PER_DOC, salt=f"copy_drills/{seed}"))
  rng.shuffle(words)
  docs = []
  for d in range(n):
    ws = words[d * WORDS_PER_DOC:(d + 1) * WORDS_PER_DOC]
    paras = [f"Word games, list {d + 1}. Today we practise copying {len(ws)} invented words: {', '.join(ws)}."]
    paras += [rng.choice(SENTENCES).format(k=k + 1, w=w, n=len(w), f=w[0], l=w[-1]) for k, w in enumerate(ws)]
    paras.append(f"To finish, write the list again: {', '.join(ws)}.")
    docs.append("\n\n".join(paras))
  return docs
