"""What every verifiable task provides: examples with a reference answer, and a reward.

A task (`lm/tasks/world.py`, `arithmetic.py`, `spelling.py`, `gsm8k.py`; looked up by name
with `lm.tasks.get`) hands out `Example`s and scores completions:

  task.examples(split, n, seed) → [Example]     split: "train" (SFT, GRPO prompts) | "eval" (held out)
  task.reward(completion, example) → 1.0 | 0.0  lenient about the words around the answer,
                                                strict about the answer itself

An Example's `messages` is the prompt conversation (user turns) in the format
`lm/conversation.py` renders; `target` is the ideal assistant reply, used as
the SFT label; `reference` is the bare answer the reward compares with. The
verifier only ever reads text: it never sees the model.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import random
import re
from typing import Iterator, Protocol, Sequence, TypeVar

from lm.errors import UserError

SPLITS = ("train", "eval")
_NUMBER = re.compile(r"(?<![\d,])\d{1,3}(?:,\d{3})+(?![\d,])|\d+")


@dataclasses.dataclass
class Example:
  task: str                 # the task's registry name
  messages: list[dict]      # the prompt: [{"role": "user", "content": ...}]
  reference: str            # the answer the reward checks ("1953", "843", "s-t-r-a-w")
  target: str               # the full ideal assistant reply (SFT label)
  meta: dict = dataclasses.field(default_factory=dict)  # e.g. exposures, digits, template

  def conversation(self) -> list[dict]:
    """The prompt answered with the target: one SFT conversation."""
    return self.messages + [{"role": "assistant", "content": self.target}]


class Task(Protocol):
  name: str

  def examples(self, split: str, n: int | None = None, seed: int = 0) -> list[Example]:
    ...

  def reward(self, completion: str, example: Example) -> float:
    ...


def check_split(split: str) -> None:
  if split not in SPLITS:
    raise UserError(f"task split {split!r} is not one of {SPLITS}")


def numbers(text: str) -> list[int]:
  """Integers in the text, in order; "9,022" is one number."""
  return [int(m.replace(",", "")) for m in _NUMBER.findall(text)]


def last_number(text: str) -> int | None:
  found = numbers(text)
  return found[-1] if found else None


def stable_hash(text: str) -> int:
  """A hash that is the same in every process (Python's hash() is salted), for fixed splits."""
  return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


_T = TypeVar("_T")


def cycled(items: Sequence[_T], rng: random.Random) -> Iterator[_T]:
  """The items in a shuffled order, reshuffled at every pass, without end. Lazy: a pass is shuffled
  only when its first item is asked for, so a caller drawing from the same `rng` between items sees
  the same stream as one that shuffles and then consumes each pass."""
  while True:
    order = list(items)
    rng.shuffle(order)
    yield from order


def take_cycled(items: Sequence[_T], n: int | None, rng: random.Random) -> Iterator[_T]:
  """`n` items of `cycled` (every item once, in a seeded order, when n is None)."""
  return itertools.islice(cycled(items, rng), len(items) if n is None else n)

