"""Multi-digit addition and multiplication with worked steps.

  task = ArithmeticTask(add_digits=(2, 4), mul_digits=(2, 3), mul_by_digits=(1, 2))
  task.examples("train", n=1000, seed=0)

Targets show the method and end with a line "Answer: <n>":
  addition         column by column from the ones, with the carries
  multiplication   one partial product per digit of the multiplier, then their sum
or, with `worked=False`, the answer alone ("Answer: <n>"): the "models need
tokens to think" ablation compares the two. `compact=True` writes the same steps in
about a third of the tokens (one "x+y+carry=sum" line per column, one "a*d=p" line
per partial product), for RL, whose rollouts and updates cost per token.
The reward reads the last number of the completion.

Splits are by problem: a pair of operands (in either order) is held out when
its stable hash says so (about one in `eval_every`), whatever the seed, so an
eval problem never appears in train.
"""
from __future__ import annotations

import dataclasses
import random

from lm.errors import UserError
from lm.tasks.base import Example, check_split, last_number, stable_hash

NAME = "arithmetic"
PROMPTS = {
    "add": ("What is {a} + {b}?", "Compute {a} plus {b}.", "Add {a} and {b}.", "What is the sum of {a} and {b}?"),
    "mul": ("What is {a} * {b}?", "Compute {a} times {b}.", "Multiply {a} by {b}.",
            "What is the product of {a} and {b}?"),
}
PLACES = ("Ones", "Tens", "Hundreds", "Thousands", "Ten thousands", "Hundred thousands", "Millions")


def _place(i: int) -> str:
  return PLACES[i] if i < len(PLACES) else f"Column {i + 1}"


def _columns(a: int, b: int):
  """(digit of a, digit of b, carry in, column sum) per column, from the ones."""
  da, db = str(a)[::-1], str(b)[::-1]
  carry = 0
  for i in range(max(len(da), len(db))):
    x, y = int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0
    yield x, y, carry, x + y + carry
    carry = (x + y + carry) // 10


def _partials(a: int, b: int) -> list[tuple[int, int]]:
  """(factor, a * factor) per digit of b, from the ones: 77 × 12 → (2, 154), (10, 770)."""
  return [(int(d) * 10 ** i, a * int(d) * 10 ** i) for i, d in enumerate(str(b)[::-1])]


def addition_steps(a: int, b: int) -> str:
  """Column-by-column addition with carries, ending with "Answer: a+b"."""
  lines = ["Add column by column, starting from the ones."]
  cols = list(_columns(a, b))
  for i, (x, y, carry, s) in enumerate(cols):
    terms = f"{x} + {y}" + (f" + {carry}" if carry else "")
    lines.append(f"{_place(i)}: {terms} = {s}. Write {s % 10}" + (f", carry {s // 10}." if s >= 10 else "."))
  if cols[-1][3] >= 10:
    lines.append(f"{_place(len(cols))}: write the carry {cols[-1][3] // 10}.")
  lines += [f"So {a} + {b} = {a + b}.", f"Answer: {a + b}"]
  return "\n".join(lines)


def compact_addition_steps(a: int, b: int) -> str:
  """One line per column from the ones, "x+y[+carry]=sum", then "Answer: a+b" (the answer's digits are
  the last digits of the sums read upwards, the last sum whole)."""
  lines = [f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={s}" for x, y, carry, s in _columns(a, b)]
  return "\n".join(lines + [f"Answer: {a + b}"])


def multiplication_steps(a: int, b: int) -> str:
  """One partial product per digit of b (from the ones), their sum, ending with "Answer: a*b"."""
  parts = _partials(a, b)
  lines = [f"Multiply {a} by each digit of {b}, starting from the ones, then add the partial products."]
  lines += [f"{a} * {f} = {p}" for f, p in parts]
  if len(parts) > 1:
    lines.append(" + ".join(str(p) for _, p in parts) + f" = {a * b}")
  lines += [f"So {a} * {b} = {a * b}.", f"Answer: {a * b}"]
  return "\n".join(lines)


def compact_multiplication_steps(a: int, b: int) -> str:
  """One line per partial product, "a*f=p", their sum when there are several, then "Answer: a*b"."""
  parts = _partials(a, b)
  lines = [f"{a}*{f}={p}" for f, p in parts]
  if len(parts) > 1:
    lines.append("+".join(str(p) for _, p in parts) + f"={a * b}")
  return "\n".join(lines + [f"Answer: {a * b}"])


def _number(rng: random.Random, digits: tuple[int, int]) -> int:
  d = rng.randint(*digits)
  return rng.randrange(10 ** (d - 1) if d > 1 else 0, 10 ** d)


@dataclasses.dataclass
class ArithmeticTask:
  ops: tuple = ("add", "mul")      # which operations, drawn uniformly
  add_digits: tuple = (2, 4)       # digits of each addend (inclusive range)
  mul_digits: tuple = (2, 3)       # digits of the multiplicand
  mul_by_digits: tuple = (1, 2)    # digits of the multiplier (one partial product per digit)
  eval_every: int = 10             # about 1 in this many problems is held out
  worked: bool = True              # targets show the steps (False: "Answer: <n>" only)
  compact: bool = False            # worked steps in their short form (about a third of the tokens)
  name: str = NAME

  def __post_init__(self):
    bad = [op for op in self.ops if op not in PROMPTS]
    if bad or not self.ops:
      raise UserError(f"arithmetic task: ops {bad or 'empty'} not among {tuple(PROMPTS)}")

  def split_of(self, op: str, a: int, b: int) -> str:
    key = f"{op}:{min(a, b)}:{max(a, b)}"
    return "eval" if stable_hash(key) % self.eval_every == 0 else "train"

  def _problem(self, rng: random.Random) -> tuple[str, int, int]:
    op = rng.choice(self.ops)
    if op == "add":
      return op, _number(rng, self.add_digits), _number(rng, self.add_digits)
    return op, _number(rng, self.mul_digits), _number(rng, self.mul_by_digits)

  def examples(self, split: str, n: int | None = None, seed: int = 0) -> list[Example]:
    check_split(split)
    n = 1000 if n is None else n
    rng = random.Random(f"{NAME}/{split}/{seed}")
    seen, out, draws = set(), [], 0
    while len(out) < n:
      draws += 1
      if draws > 1000 * n:
        raise UserError(f"arithmetic task: could not draw {n} {split} problems with these digit ranges")
      op, a, b = self._problem(rng)
      # Distinct problems first; small digit ranges run out of them, and then repeats are allowed.
      if self.split_of(op, a, b) != split or ((op, a, b) in seen and draws < 50 * n):
        continue
      seen.add((op, a, b))
      out.append(self._example(rng, op, a, b, split))
    return out

  def _example(self, rng: random.Random, op: str, a: int, b: int, split: str) -> Example:
    k = rng.randrange(len(PROMPTS[op]))
    answer = a + b if op == "add" else a * b
    if not self.worked:
      target = f"Answer: {answer}"
    elif self.compact:
      target = compact_addition_steps(a, b) if op == "add" else compact_multiplication_steps(a, b)
    else:
      target = addition_steps(a, b) if op == "add" else multiplication_steps(a, b)
    meta = {"op": op, "a": a, "b": b, "digits": [len(str(a)), len(str(b))], "template": k, "split": split}
    return Example(NAME, [{"role": "user", "content": PROMPTS[op][k].format(a=a, b=b)}], str(answer), target, meta)

  def reward(self, completion: str, example: Example) -> float:
    """1.0 iff the last number in the completion is the answer ("9,022" counts as 9022)."""
    return float(last_number(completion) == int(example.reference))
