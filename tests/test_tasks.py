"""Verifiable tasks: deterministic, splits disjoint, rewards right on right/wrong/verbose answers, steps correct."""
import concurrent.futures as cf
import json
import re

import pytest

from lm import tasks
from lm.errors import UserError
from lm.prep import synthetic
from lm.tasks import arithmetic, gsm8k, spelling, world
from lm.tasks.base import Example
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def world_task():
  return tasks.get("world", seed=0)


@pytest.mark.parametrize("name", ["world", "arithmetic", "spelling"])
def test_deterministic_and_targets_score_one(name):
  task = tasks.get(name)
  for split in tasks.SPLITS:
    a, b = task.examples(split, n=150, seed=3), task.examples(split, n=150, seed=3)
    assert a == b and len(a) == 150
    assert task.examples(split, n=150, seed=4) != a
    for ex in a:
      assert ex.task == name and ex.meta["split"] == split
      assert [m["role"] for m in ex.messages] == ["user"] and ex.messages[0]["content"]
      assert task.reward(ex.target, ex) == 1.0, ex


def test_registry():
  assert set(tasks.NAMES) >= {"world", "arithmetic", "spelling", "gsm8k"}
  for name in tasks.NAMES:  # one call shape for every task
    assert tasks.get(name, world=None, seed=1).name == name
  assert tasks.get("world", seed=1).world.people == synthetic.make_world(1).people
  with pytest.raises(ValueError, match="unknown task 'gsm9k'"):
    tasks.get("gsm9k")
  assert tasks.get("arithmetic", add_digits=(5, 5)).add_digits == (5, 5)
  with pytest.raises(ValueError, match="ops"):
    tasks.get("arithmetic", ops=("div",))


def test_world_splits_hold_out_entities(world_task):
  split_of = world_task.split_of
  train, held = world_task.examples("train", n=3000, seed=0), world_task.examples("eval")
  held_names = {ex.meta["entity"] for ex in held}
  assert all(split_of[(ex.meta["type"], ex.meta["entity"])] == "eval" for ex in held)
  for ex in train:
    assert split_of[(ex.meta["type"], ex.meta["entity"])] == "train" and ex.meta["exposures"] >= 1
    assert not any(n in ex.messages[0]["content"] or ex.target.startswith(n) for n in held_names), ex
  # eval asks every held-out fact once, in every exposure bucket, unseen (exposure 0) entities included
  assert len(held) == len(world_task.facts("eval")) == len({(e.meta["entity"], e.meta["attribute"]) for e in held})
  assert {ex.meta["exposures"] for ex in held} == set(synthetic.EXPOSURE_BUCKETS)
  assert {ex.meta["type"] for ex in held} == {ex.meta["type"] for ex in train} == {"person", "city", "company"}
  assert {ex.meta["attribute"] for ex in held} == {a for attrs in world.ASKED.values() for a in attrs}
  # Answers refer to the entity by pronoun (a small model copies many-token names badly).
  pronoun = {p["name"]: p["pronoun"] for p in world_task.world.people}
  for ex in held:
    first = ex.target.split()[0]
    assert first == (pronoun[ex.meta["entity"]].capitalize() if ex.meta["type"] == "person" else "It"), ex
    assert ex.meta["entity"] not in ex.target
  people = [p for p in world_task.world.people if p["exposures"] == 4]
  assert abs(sum(split_of[("person", p["name"])] == "eval" for p in people) - len(people) / 2) <= 0.5


def test_world_exposures_match_world_json_and_text(tmp_path):
  synthetic.write_crawl(str(tmp_path), seed=2, n_files=1, n_people=36, n_cities=8, n_companies=6)
  task = tasks.get("world", world=str(tmp_path / "world.json"))
  rows = json.loads((tmp_path / "world.json").read_text())["facts"]
  exposures = {(r["entity"], r["attribute"]): r["exposures"] for r in rows}
  counted = synthetic.count_exposures(synthetic.clean_documents(2, 36, 8, 6), task.world)
  for split in tasks.SPLITS:
    for ex in task.examples(split):
      key = (ex.meta["entity"], ex.meta["attribute"])
      assert ex.meta["exposures"] == exposures[key] == counted[key]
      assert ex.reference == str(next(r["value"] for r in rows if (r["entity"], r["attribute"]) == key))
  with pytest.raises(FileNotFoundError, match="nowhere.json"):
    world.world_from_file(str(tmp_path / "nowhere.json"))


def _find(task, split, **meta):
  return next(ex for ex in task.examples(split, n=400, seed=0) if all(ex.meta[k] == v for k, v in meta.items()))


def test_world_reward(world_task):
  ex = _find(world_task, "eval", attribute="birth_year")
  name, year = ex.meta["entity"], int(ex.reference)
  assert world_task.reward(f"I believe {name} was born in {year}, in the spring.", ex) == 1.0
  assert world_task.reward(f"{year}", ex) == 1.0
  assert world_task.reward(f"{name} was born in {year + 1}.", ex) == 0.0
  assert world_task.reward(f"Either {year} or {year + 1}.", ex) == 0.0
  assert world_task.reward("I don't know.", ex) == 0.0
  ex = _find(world_task, "eval", attribute="city", type="person")
  other = next(c["name"] for c in world_task.world.cities if c["name"] != ex.reference)
  assert world_task.reward(f"Sure! {ex.meta['entity']} grew up in {ex.reference.upper()}.", ex) == 1.0
  assert world_task.reward(f"{other}.", ex) == 0.0
  assert world_task.reward(f"Maybe {ex.reference}, or maybe {other}.", ex) == 0.0
  ex = _find(world_task, "eval", attribute="industry")
  other = next(i for i in world_task.candidates["industry"] if i != ex.reference)
  assert world_task.reward(f"{ex.meta['entity']} makes money from {ex.reference}.", ex) == 1.0
  assert world_task.reward(f"{ex.meta['entity']} works in {other}.", ex) == 0.0
  # The reward reads only the example: a task built on another world scores the same.
  other_world = tasks.get("world", seed=7)
  for ex in world_task.examples("eval", n=100, seed=1):
    assert other_world.reward(ex.target, ex) == 1.0
    assert other_world.reward("Somewhere in Velmouth, I think, in 1066.", ex) == 0.0


def _equations_hold(text):
  eqs = re.findall(r"(\d+(?: [+*] \d+)+) = (\d+)", text)
  assert eqs
  for lhs, rhs in eqs:
    assert eval(lhs) == int(rhs), (lhs, rhs)  # only digits, + and * reach eval


def test_arithmetic_steps_are_correct():
  task = arithmetic.ArithmeticTask(add_digits=(1, 6), mul_digits=(1, 4), mul_by_digits=(1, 3))
  for ex in task.examples("train", n=300, seed=1):
    a, b, op = ex.meta["a"], ex.meta["b"], ex.meta["op"]
    _equations_hold(ex.target)
    assert ex.target.endswith(f"Answer: {ex.reference}") and int(ex.reference) == (a + b if op == "add" else a * b)
    if op == "add":
      written = re.findall(r"Write (\d)|write the carry (\d)", ex.target)
      assert int("".join(d or c for d, c in written)[::-1]) == a + b  # the column digits spell the sum
    else:
      partials = re.findall(rf"^{a} \* (\d+) = (\d+)$", ex.target, flags=re.M)
      assert [int(f) for f, _ in partials] == [int(d) * 10 ** i for i, d in enumerate(str(b)[::-1])]


def test_compact_arithmetic_steps_are_correct_and_short():
  kw = dict(add_digits=(1, 6), mul_digits=(1, 4), mul_by_digits=(1, 3))
  long, short = (arithmetic.ArithmeticTask(**kw, compact=c).examples("train", n=300, seed=1) for c in (False, True))
  for lx, ex in zip(long, short):
    a, b, op = ex.meta["a"], ex.meta["b"], ex.meta["op"]
    assert (lx.messages, lx.reference) == (ex.messages, ex.reference)  # the same problems, other targets
    eqs = re.findall(r"^([\d+*]+)=(\d+)$", ex.target, flags=re.M)
    assert eqs and all(eval(lhs) == int(rhs) for lhs, rhs in eqs)  # only digits, + and * reach eval
    assert ex.target.endswith(f"Answer: {ex.reference}") and len(ex.target) < len(lx.target) / 2
    if op == "add":  # the sums' last digits read upwards, the last sum whole, spell the answer
      sums = [int(rhs) for _, rhs in eqs]
      assert int(str(sums[-1]) + "".join(str(s % 10) for s in sums[-2::-1])) == a + b
      assert eqs[0][0] == f"{a % 10}+{b % 10}"
    else:
      assert [lhs for lhs, _ in eqs[:len(str(b))]] == [f"{a}*{int(d) * 10 ** i}" for i, d in enumerate(str(b)[::-1])]
  assert arithmetic.compact_addition_steps(598, 317) == "8+7=15\n9+1+1=11\n5+3+1=9\nAnswer: 915"
  assert arithmetic.compact_addition_steps(95, 7) == "5+7=12\n9+0+1=10\nAnswer: 102"
  assert arithmetic.compact_multiplication_steps(77, 12) == "77*2=154\n77*10=770\n154+770=924\nAnswer: 924"


def test_arithmetic_splits_and_reward():
  task = tasks.get("arithmetic")
  key = lambda ex: (ex.meta["op"], min(ex.meta["a"], ex.meta["b"]), max(ex.meta["a"], ex.meta["b"]))
  held = {key(ex) for ex in task.examples("eval", n=300, seed=0)}
  assert not held & {key(ex) for seed in range(3) for ex in task.examples("train", n=1000, seed=seed)}
  ex = arithmetic.ArithmeticTask(ops=("mul",)).examples("eval", n=1, seed=0)[0]
  n = int(ex.reference)
  assert task.reward(f"Let me think. The product is {n:,}.", ex) == 1.0
  assert task.reward(f"{n}", ex) == 1.0
  assert task.reward(f"It is {n + 1}.", ex) == 0.0
  assert task.reward(f"{n} is wrong, it is really {n - 10}", ex) == 0.0
  assert task.reward("no idea", ex) == 0.0
  small = arithmetic.ArithmeticTask(ops=("add",), add_digits=(1, 1))
  assert len(small.examples("train", n=200, seed=0)) == 200  # tiny problem spaces repeat rather than fail


def test_spelling_steps_splits_and_reward():
  task = spelling.SpellingTask()
  assert not set(task.words("train")) & set(task.words("eval")) and len(task.words("eval")) >= 20
  assert "Answer: 3" in spelling.count_steps("strawberry", "r") and "r (3)" in spelling.count_steps("strawberry", "r")
  examples = task.examples("train", n=400, seed=0)
  counts = [ex for ex in examples if ex.meta["kind"] == "count"]
  assert any(ex.reference == "0" for ex in counts) and any(int(ex.reference) >= 2 for ex in counts)
  for ex in counts:
    assert int(ex.reference) == ex.meta["word"].count(ex.meta["letter"])
    assert spelling.spelled(ex.meta["word"]) in ex.target
  ex = next(ex for ex in counts if int(ex.reference) >= 1)
  k, letter = int(ex.reference), ex.meta["letter"]
  assert task.reward(f"There are {k} {letter}'s in that word.", ex) == 1.0
  assert task.reward(f"There are {k + 1}.", ex) == 0.0
  ex = next(ex for ex in examples if ex.meta["kind"] == "spell")
  word = ex.meta["word"]
  assert task.reward(f"Sure: {'-'.join(word.upper())}!", ex) == 1.0
  assert task.reward(f"It is spelled {'-'.join(word[:-1])}.", ex) == 0.0
  assert task.reward(f"{'-'.join(word)}, no wait, {'-'.join(word[::-1])}", ex) == float(word == word[::-1])


def test_made_up_words_join_training_only_and_are_fixed():
  plain, more = spelling.SpellingTask(), spelling.SpellingTask(made_up_words=500)
  assert more.words("eval") == plain.words("eval")  # the held-out words never change
  extra = set(more.words("train")) - set(plain.words("train"))
  assert len(extra) == 500 and not extra & set(spelling.WORDS)
  assert spelling.made_up(500) == spelling.made_up(500) and spelling.made_up(50) == spelling.made_up(500)[:50]
  assert all(w.isalpha() and w.islower() and 4 <= len(w) <= 14 for w in extra)
  drawn = {ex.meta["word"] for ex in more.examples("train", n=2000, seed=0)}
  assert len(drawn & extra) > 400  # the examples use them, not only the real words
  with pytest.raises(UserError, match="made_up_words"):
    spelling.SpellingTask(made_up_words=-1)


# Hand-checked: (reference, completion, reward). The answer is the last \\boxed{} or else the last number.
SPELLING_COUNT = [
    ("3", "There are 3 rs in strawberry.", 1.0), ("3", "The letter r appears 3 times in strawberry.", 1.0),
    ("3", "**3**", 1.0), ("3", "3.", 1.0), ("3", "s-t-r-a-w-b-e-r-r-y: r (1), r (2), r (3).\nAnswer: 3", 1.0),
    ("3", "2", 0.0), ("3", "It has 3 r's, not 2.", 0.0), ("3", "three", 0.0),  # digits only: the target's format
    ("3", "It appears 3 times in the 10-letter word.", 0.0), ("0", "z does not appear in it: 0 times.", 1.0),
    ("0", "Answer: 0", 1.0), ("0", "none", 0.0), ("0", "1", 0.0),
]
SPELLING_SPELL = [
    ("S-T-R-A-W-B-E-R-R-Y", 1.0), ("Sure: s-t-r-a-w-b-e-r-r-y.", 1.0),
    ("The word strawberry has 10 letters: s-t-r-a-w-b-e-r-r-y.\nAnswer: s-t-r-a-w-b-e-r-r-y", 1.0),
    ("s-t-r-a-w-b-e-r-y", 0.0), ("strawberry", 0.0), ("x-s-t-r-a-w-b-e-r-r-y", 0.0),
    ("s-t-r-a-w-b-e-r-r-y, or s-t-r-a-w-b-e-r-r-i-e-s", 0.0), ("s - t - r - a - w - b - e - r - r - y", 0.0),
]


@pytest.mark.parametrize("reference,completion,expected", SPELLING_COUNT)
def test_spelling_count_reward_hand_checked(reference, completion, expected):
  ex = Example("spelling", [], reference, "", {"kind": "count"})
  assert spelling.SpellingTask().reward(completion, ex) == expected


@pytest.mark.parametrize("completion,expected", SPELLING_SPELL)
def test_spelling_spell_reward_hand_checked(completion, expected):
  ex = Example("spelling", [], "s-t-r-a-w-b-e-r-r-y", "", {"kind": "spell"})
  assert spelling.SpellingTask().reward(completion, ex) == expected


GSM8K_REWARDS = [
    ("1200", "So the total is 1,200.", 1.0), ("1200", "She pays $1,200 in all.", 1.0),
    ("1200", "\\boxed{1,200}", 1.0), ("1200", "That is 1200.00 dollars", 1.0), ("1080", "1,080 apples", 1.0),
    ("18", "The answer is 18.", 1.0), ("18", "18 dollars", 1.0), ("18", "It is 18 cm long.", 1.0),
    ("18", "$18", 1.0), ("18", "18.0", 1.0), ("18", "#### 18", 1.0), ("18", "Answer: 18", 1.0),
    ("18", "The area is 18 m^2.", 1.0),  # the exponent is not the answer
    ("18", "\\boxed{18}", 1.0), ("18", "\\boxed{\\$18}", 1.0), ("18", "\\boxed{18 dollars}", 1.0),
    ("18", "\\boxed{18\\text{ cm}}", 1.0), ("18", "Thus $\\boxed{\\frac{36}{2}}$.", 1.0),  # math-verify
    ("18", "\\boxed{18}, since 3 * 6 = 18 and 2 + 1 = 3", 1.0),  # a boxed answer wins over later numbers
    ("-7", "The temperature changed by -7 degrees.", 1.0), ("-7", "\\boxed{-7}", 1.0), ("-7", "-$7", 1.0),
    ("0.5", "It takes 0.5 hours.", 1.0),
    ("18", "The answer is 17.", 0.0), ("18", "18, no wait, it is 19", 0.0), ("18", "18.5", 0.0),
    ("18", "\\boxed{17}", 0.0), ("18", "\\boxed{18^2}", 0.0), ("18", "\\boxed{18, 19}", 0.0),
    ("18", "I think 18 plus 2 cookies", 0.0), ("18", "eighteen", 0.0), ("18", "", 0.0),
    ("-7", "It went down by 7.", 0.0), ("-7", "10-7 = 3", 0.0), ("7", "The answer is -7.", 0.0),
    ("1200", "1.200", 0.0), ("5", "5 - 3 = 2", 0.0),
]


@pytest.mark.parametrize("reference,completion,expected", GSM8K_REWARDS)
def test_gsm8k_reward_hand_checked(reference, completion, expected):
  assert gsm8k.GSM8KTask().reward(completion, Example("gsm8k", [], reference, "")) == expected


def test_gsm8k_reward_off_the_main_thread():
  # math-verify's own timeout needs the main thread; the reward must work from worker threads too.
  ex = Example("gsm8k", [], "18", "")
  with cf.ThreadPoolExecutor(2) as pool:
    got = list(pool.map(lambda c: gsm8k.GSM8KTask().reward(c, ex), ["\\boxed{\\frac{36}{2}}", "\\boxed{17}"]))
  assert got == [1.0, 0.0]


def _gsm8k_file(path, rows):
  path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows))
  return str(path)


def test_gsm8k_task_on_a_small_file(tmp_path):
  rows = [(f"Sam has {i} apples and buys {i * 100} more. How many now?",
           f"He has {i} + {i * 100} = <<{i}+{i * 100}={i * 101}>>{i * 101} apples.\n#### {i * 101:,}")
          for i in range(1, 41)]
  rows.append(("It was 3 degrees and fell by 10. What is it now?", "3 - 10 = <<3-10=-7>>-7\n#### -7"))
  task = tasks.get("gsm8k", path=_gsm8k_file(tmp_path / "g.jsonl", rows), eval_every=3)
  train, held = task.examples("train"), task.examples("eval")
  assert len(train) + len(held) == 41 and held and not {e.messages[0]["content"] for e in held} & {
      e.messages[0]["content"] for e in train}
  assert all(task.split_of(e.messages[0]["content"]) == "eval" for e in held)
  assert task.examples("train", n=100, seed=1) == task.examples("train", n=100, seed=1) != task.examples(
      "train", n=100, seed=2)
  by_q = {e.messages[0]["content"]: e for e in train + held}
  ex = by_q["Sam has 30 apples and buys 3000 more. How many now?"]
  assert ex.reference == "3030" and ex.target == "He has 30 + 3000 = 3030 apples.\n#### 3,030"
  assert ex.meta["line"] == 30 and ex.conversation()[-1] == {"role": "assistant", "content": ex.target}
  assert by_q["It was 3 degrees and fell by 10. What is it now?"].reference == "-7"
  for e in train + held:
    assert task.reward(e.target, e) == 1.0 and "<<" not in e.target
  bad = _gsm8k_file(tmp_path / "bad.jsonl", rows[:2] + [("Q?", "so\n#### about 5")])
  with pytest.raises(ValueError, match=r"bad.jsonl:3: the final answer 'about 5'"):
    tasks.get("gsm8k", path=bad).examples("train")
  with pytest.raises(FileNotFoundError, match="gsm8k task: no such file .*nowhere.jsonl"):
    tasks.get("gsm8k", path=str(tmp_path / "nowhere.jsonl")).examples("eval")


def test_gsm8k_real_file_loads():
  task = gsm8k.GSM8KTask(path=shared_file("gsm8k-train.jsonl"))
  train, held = task.problems("train"), task.problems("eval")
  assert len(train) + len(held) == 7473 and 600 < len(held) < 900
  assert not {e.messages[0]["content"] for e in train} & {e.messages[0]["content"] for e in held}
  assert {e.reference for e in held + train} >= {"72", "1080", "-7"}
  for e in train + held:  # every worked solution earns its own reward, calculator annotations gone
    assert "<<" not in e.target and re.search(r"\n#### (\S+)$", e.target)[1].replace(",", "") == e.reference
    assert task.reward(e.target, e) == 1.0, e
  assert task.examples("eval", n=50, seed=0) == gsm8k.GSM8KTask(path=task.path).examples("eval", n=50, seed=0)
