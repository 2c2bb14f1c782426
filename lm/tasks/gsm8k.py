"""GSM8K grade-school word problems as a verifiable task (GRPO prompts, SFT targets, held-out eval).

  task = GSM8KTask(path="../shared/data/gsm8k-train.jsonl")   # the default; relative to the project root
  task.examples("eval", n=200, seed=0)
  task.reward("... so she earned $1,200 in all.", example)      # 1.0 when example.reference == "1200"

Reads GSM8K JSONL (`{"question", "answer"}`, the answer ending in a line
"#### <final answer>") through the same reader as the `gsm8k` conversation
source (`lm.data.conversations.gsm8k_rows`), on the first call to `examples`
(building the task reads nothing, so the registry can list it anywhere).

- `messages`: the question as the user turn.
- `reference`: the number after "####", commas dropped ("1,080" → "1080", "-7").
- `target`: the dataset's worked solution with its calculator annotations
  removed ("48/2 = <<48/2=24>>24" → "48/2 = 24"), ending with its own
  "#### 72" line. We keep GSM8K's "####" rather than the other tasks'
  "Answer: 72" so that SFT on this task and on the `gsm8k` conversation
  source (the same solutions with python calls) teach one ending, the one
  imported GSM8K-tuned models already write; the reward accepts either.

Reward: the completion's answer is its last `\\boxed{...}` when it has one,
else its last number (a minus sign attached to it, "1,200" with its commas,
"18.5" with its decimals; not an exponent as in "m^2", not a sentence's final
period). It scores 1.0 when math-verify (`math_verify.verify`, which reads
LaTeX such as `\\frac{36}{2}` or `\\text{ cm}`) or an exact rational comparison
of a plain number with optional currency and unit words ("$18", "18 dollars",
"18.0") says it equals the reference, else 0.0. So "The answer is 18.",
"\\boxed{18}", "$18" and "18 cm" are right, and "17", "18, no 19" and an
earlier 18 followed by another number are wrong.

Splits are by question: a problem is held out when the stable hash of its
question says so (about one in `eval_every`), whatever the seed.
"""
from __future__ import annotations

import dataclasses
import fractions
import functools
import os
import random
import re
import threading

from lm.errors import MissingFile, UserError
from lm.tasks.base import Example, check_split, stable_hash, take_cycled

NAME = "gsm8k"
DEFAULT_PATH = "../shared/data/gsm8k-train.jsonl"

# A minus sign counts when it touches the number and does not follow a word or a closing bracket
# ("-7", "= -7", "-$7"; "10-7" is a subtraction). Not inside a word or after "." or "^" (an exponent).
_NUMBER = re.compile(r"(?:(?<![\w)\]])(?P<sign>[-\u2212])\$?)?(?<![\w.^])"
                     r"(?P<int>\d{1,3}(?:,\d{3})+(?!,?\d)|\d+)(?P<frac>\.\d+)?")
# A span that is one plain number: currency before it, unit words after it, nothing else.
_PLAIN = re.compile(r"\s*\$?\s*(?P<num>[-\u2212]?\$?[\d.,]+)(?:\s+|$)(?:[A-Za-z]+[.,]?(?:\s+|$))*")
_LATEX_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_BOXED = re.compile(r"\\boxed\s*\{")


def _value(m: re.Match) -> fractions.Fraction:
  v = fractions.Fraction(m["int"].replace(",", "") + (m["frac"] or ""))
  return -v if m["sign"] else v


def number_values(text: str) -> list[fractions.Fraction]:
  """The numbers of the text as exact rationals, in order ("1,200" → 1200, "-3.5" → -7/2)."""
  return [_value(m) for m in _NUMBER.finditer(text)]


def last_boxed(text: str) -> str | None:
  """The content of the last complete `\\boxed{...}` (nested braces allowed), or None."""
  for m in reversed(list(_BOXED.finditer(text))):
    depth = 1
    for i in range(m.end(), len(text)):
      depth += {"{": 1, "}": -1}.get(text[i], 0)
      if depth == 0:
        return text[m.end():i]
  return None


def answer_span(completion: str) -> tuple[str, bool] | None:
  """(the answer's text, whether it was boxed): the last boxed expression, else the last number."""
  boxed = last_boxed(completion)
  if boxed is not None:
    return boxed, True
  found = list(_NUMBER.finditer(completion))
  return (found[-1].group(0), False) if found else None


def plain_value(span: str) -> fractions.Fraction | None:
  """The span's value when it is one plain number ("$1,200", "18 dollars", "\\text{18 cm}"), else None."""
  span = _LATEX_WRAPPERS.sub(r"\1", span).replace("\\$", "$").replace("\\,", "").replace("\\!", "")
  m = _PLAIN.fullmatch(span)
  if not m:
    return None
  values = list(_NUMBER.finditer(m["num"]))
  if len(values) != 1 or values[0].group(0).lstrip("$") != m["num"].lstrip("$").rstrip(".,"):
    return None
  return _value(values[0])


def _timeouts() -> int | None:
  """math-verify times itself out with SIGALRM, which only the main thread may use."""
  return 5 if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=4096)
def _parsed_reference(reference: str):
  from math_verify import parse
  return parse(reference, parsing_timeout=_timeouts())


def math_verified(span: str, boxed: bool, reference: str) -> bool:
  """math-verify's judgement of the span against the reference (gold first, as its API asks)."""
  from math_verify import parse, verify
  pred = parse(f"\\boxed{{{span}}}" if boxed else span, parsing_timeout=_timeouts())
  return bool(pred) and verify(_parsed_reference(reference), pred, timeout_seconds=_timeouts())


def final_answer(answer: str, where: str) -> str:
  """The reference of a GSM8K answer: the number after its last "####", commas dropped."""
  text = answer.rsplit("####", 1)[-1].strip()
  found = list(_NUMBER.finditer(text))
  if len(found) != 1 or found[0].group(0) != text:
    raise UserError(f"{where}: the final answer {text!r} after '####' is not one number")
  v = _value(found[0])
  return str(v.numerator) if v.denominator == 1 else text.replace(",", "")


def solution_text(answer: str) -> str:
  """The worked solution without GSM8K's calculator annotations; its "#### n" line stays."""
  from lm.data.conversations import CALCULATOR
  return CALCULATOR.sub("", answer).strip()


@dataclasses.dataclass
class GSM8KTask:
  path: str = DEFAULT_PATH     # GSM8K JSONL ({"question", "answer"} per line), relative to the working directory
  eval_every: int = 10         # about 1 in this many questions is held out
  name: str = NAME
  _by_split: dict = dataclasses.field(default=None, init=False, repr=False, compare=False)

  def __post_init__(self):
    if self.eval_every < 2:
      raise UserError(f"gsm8k task: eval_every={self.eval_every} leaves no train split; use 2 or more")

  def split_of(self, question: str) -> str:
    return "eval" if stable_hash(f"{NAME}/{question}") % self.eval_every == 0 else "train"

  def problems(self, split: str) -> list[Example]:
    """Every problem of the split, in file order (read once)."""
    check_split(split)
    if self._by_split is None:
      if not os.path.exists(self.path):
        raise MissingFile(f"gsm8k task: no such file {self.path!r}; pass path=<GSM8K JSONL> "
                          "(../shared/data/gsm8k-train.jsonl, see ../shared/data/SOURCES.md)")
      from lm.data.conversations import gsm8k_rows
      by_split: dict[str, list[Example]] = {"train": [], "eval": []}
      for lineno, question, answer in gsm8k_rows(self.path):
        s = self.split_of(question)
        reference = final_answer(answer, f"{self.path}:{lineno}")
        by_split[s].append(Example(NAME, [{"role": "user", "content": question}], reference,
                                   solution_text(answer), {"split": s, "line": lineno}))
      if not by_split["train"] or not by_split["eval"]:
        raise UserError(f"gsm8k task: {self.path} has {len(by_split['train'])} train and "
                        f"{len(by_split['eval'])} eval problems; it needs both (more problems, or another eval_every)")
      self._by_split = by_split
    return self._by_split[split]

  def examples(self, split: str, n: int | None = None, seed: int = 0) -> list[Example]:
    """`n` problems of the split in a seeded order (all of them when n is None); repeats past the end."""
    return list(take_cycled(self.problems(split), n, random.Random(f"{NAME}/{split}/{seed}")))

  def reward(self, completion: str, example: Example) -> float:
    """1.0 iff the completion's last boxed expression or last number equals the reference (see module doc)."""
    found = answer_span(completion)
    if found is None:
      return 0.0
    span, boxed = found
    value = plain_value(span)
    if value is not None and value == fractions.Fraction(example.reference):
      return 1.0
    return float(math_verified(span, boxed, example.reference))
