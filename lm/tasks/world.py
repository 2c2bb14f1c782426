"""Questions about the synthetic world (`lm/prep/synthetic.py`): what the model learnt in pretraining.

  task = WorldTask("runs/data/crawl/world.json")   # or WorldTask(seed=0): the world of that seed
  task.examples("eval")            # every held-out fact once, with a random question template
  task.examples("train", n=2000)   # SFT: teaches the answer format on other entities

Asked: people's birth year, home city, profession and employer; cities'
country; companies' industry, founding year and headquarters, each in several
phrasings. `meta` holds the entity, its type, the attribute and the fact's
`exposures` (how many sentences of the pretraining text state it).

Splits are by entity, fixed by the world alone (never by the sampling seed):
within every (entity type, exposure bucket) half of the entities are held out.
"eval" asks only about held-out entities, including those of exposure 0 (in
the world, never in the text: answering them is hallucination). No held-out
entity is ever the subject of a "train" question, and a train answer states
only a fact of a train entity, so eval accuracy measures knowledge from
pretraining, not from SFT. (A held-out city or company may still be the
*answer* to a train question, "Alma comes from Lorberg": excluding those would
teach the model never to name them.) "train" asks only about the other half,
and by default only about facts the text states at least once
(`min_train_exposure=1`): training to answer unseen facts would teach guessing.
`train_fold="a"` or `"b"` keeps one half of the train entities (again half of
every type and exposure bucket): an SFT on one fold leaves the other's facts
to be probed by a model that was never fine-tuned on them (the refusal recipe's
cross-fitted probe, experiments/refusal.py).
"""
from __future__ import annotations

import json
import os
import random
import re

from lm.errors import MissingFile, UserError
from lm.prep import synthetic
from lm.prep import synthetic_text as T
from lm.prep.synthetic_pages import article
from lm.tasks.base import Example, check_split, stable_hash, take_cycled

NAME = "world"
ASKED = {"person": ("birth_year", "city", "profession", "employer"), "city": ("country",),
         "company": ("industry", "founded", "city")}
QUESTIONS = {
    ("person", "birth_year"): ("When was {name} born?", "In which year was {name} born?",
                               "What is the birth year of {name}?", "{name} was born in which year?"),
    ("person", "city"): ("Which city is {name} from?", "Where does {name} come from?",
                         "What is the hometown of {name}?", "In which city did {name} grow up?"),
    ("person", "profession"): ("What does {name} do for a living?", "What is the profession of {name}?",
                               "What is {name}'s job?", "What kind of work does {name} do?"),
    ("person", "employer"): ("Which company does {name} work for?", "Who employs {name}?",
                             "Where does {name} work?", "What is the name of {name}'s employer?"),
    ("city", "country"): ("Which country is {name} in?", "In what country is the city of {name}?",
                          "{name} is a city in which country?"),
    ("company", "industry"): ("What industry is {name} in?", "What kind of business is {name}?",
                              "In which line of business does {name} work?"),
    ("company", "founded"): ("When was {name} founded?", "In which year was {name} founded?",
                             "How long has {name} been in business? Give the founding year."),
    ("company", "city"): ("Where is {name} based?", "In which city are the headquarters of {name}?",
                          "Which city is {name} based in?"),
}
# One answer form per question kind: SFT teaches a single, checkable format. The answer refers to
# the entity by pronoun instead of repeating its name: a small model copies a many-token name
# badly, then recalls the facts of whoever it wrote instead.
ANSWERS = {
    ("person", "birth_year"): "{Pronoun} was born in {value}.",
    ("person", "city"): "{Pronoun} comes from {value}.",
    ("person", "profession"): "{Pronoun} is {a_value}.",
    ("person", "employer"): "{Pronoun} works for {value}.",
    ("city", "country"): "It is a city in {value}.",
    ("company", "industry"): "It is {a_value} company.",
    ("company", "founded"): "It was founded in {value}.",
    ("company", "city"): "It is based in {value}.",
}
YEAR_ATTRIBUTES = ("birth_year", "founded")
_YEAR = re.compile(r"(?<!\d)\d{4}(?!\d)")


def world_from_file(path: str) -> synthetic.World:
  """The world of a crawl (`<workdir>/crawl/world.json`, written by experiments.prepare_data)."""
  if not os.path.exists(path):
    raise MissingFile(f"config.data.world: no such file {path!r}; run experiments.prepare_data first")
  with open(path) as f:
    data = json.load(f)
  world = synthetic.World(data["people"], data["cities"], data["companies"])
  if any("exposures" not in e for k in ASKED for e in world.entities(k)):
    raise UserError(f"world.json {path!r} has no exposure counts; regenerate it with experiments.prepare_data")
  return world


def _read_exposures(path: str) -> dict[tuple[str, str], int]:
  if not os.path.exists(path):
    raise MissingFile(f"config.data.exposures: no such file {path!r} (experiments.tokenize_data writes it)")
  with open(path) as f:
    return {(r["entity"], r["attribute"]): int(r["count"]) for r in json.load(f)}


FOLDS = ("a", "b")


def entity_split(world: synthetic.World) -> dict[tuple[str, str], str]:
  """{(type, name): "eval" | "a" | "b"}: half of every (type, exposure bucket) held out ("eval"), the
  other half, the train entities, alternately in fold "a" or "b" (in the same hashed order)."""
  split = {}
  for kind in ASKED:
    buckets: dict[int, list[str]] = {}
    for e in world.entities(kind):
      buckets.setdefault(e["exposures"], []).append(e["name"])
    for names in buckets.values():
      for i, name in enumerate(sorted(names, key=lambda n: stable_hash(f"{kind}/{n}"))):
        split[(kind, name)] = "eval" if i % 2 == 0 else FOLDS[i // 2 % 2]
  return split


def written_value(key: tuple[str, str], value) -> str:
  """The value as `ANSWERS[key]` writes it: "an architect" where the template says `{a_value}`."""
  return article(str(value)) if "{a_value}" in ANSWERS[key] else str(value)


class WorldTask:
  name = NAME

  def __init__(self, world: synthetic.World | str | None = None, seed: int = 0, min_train_exposure: int = 1,
               exposures: str | None = None, train_fold: str = ""):
    """`world`: a World, a world.json path, or None for `synthetic.make_world(seed)`.
    `exposures`: counts measured in the pretraining shards (`<shards>/train/exposures.json`,
    written by experiments.tokenize_data); examples then carry those instead of the design's.
    `train_fold`: "" (every train entity), "a" or "b" (one half of them)."""
    if train_fold not in ("",) + FOLDS:
      raise UserError(f"config.tasks.world.train_fold={train_fold!r}: choose '', 'a' or 'b'")
    if isinstance(world, str):
      world = world_from_file(world)
    self.world = world or synthetic.make_world(seed)
    self.measured = _read_exposures(exposures) if exposures else None
    self.min_train_exposure = min_train_exposure
    self.train_fold = train_fold
    self.fold_of = entity_split(self.world)  # "eval", or the train entity's fold
    self.split_of = {key: "eval" if fold == "eval" else "train" for key, fold in self.fold_of.items()}
    self.pronoun = {p["name"]: p["pronoun"] for p in self.world.people}
    # Everything a completion could name as an answer of each kind, in any world the generator can
    # make (so a reward does not depend on which world the task was built from): the strict part.
    w = self.world
    self.candidates = {
        "city": sorted({h + t for h in T.PLACE_HEADS for t in T.PLACE_TAILS} | {c["name"] for c in w.cities}),
        "employer": sorted({f"{h} {t}" for h in T.COMPANY_HEADS for t in T.COMPANY_TAILS}
                           | {c["name"] for c in w.companies}),
        "profession": sorted(set(T.PROFESSIONS) | {p["profession"] for p in w.people}),
        "country": sorted(set(T.COUNTRIES) | {c["country"] for c in w.cities}),
        "industry": sorted(set(T.INDUSTRIES) | {c["industry"] for c in w.companies}),
    }

  def facts(self, split: str) -> list[dict]:
    """The split's askable facts, as rows of `World.facts()`."""
    check_split(split)
    rows = []
    for row in self.world.facts():
      if row["attribute"] not in ASKED[row["type"]] or self.split_of[(row["type"], row["entity"])] != split:
        continue
      if split == "train" and row["exposures"] < self.min_train_exposure:
        continue
      if split == "train" and self.train_fold and self.fold_of[(row["type"], row["entity"])] != self.train_fold:
        continue
      rows.append(row)
    return rows

  def examples(self, split: str, n: int | None = None, seed: int = 0) -> list[Example]:
    """`n` questions (None: every fact of the split once); facts cycle in a seeded order when n is larger."""
    facts = self.facts(split)
    if not facts:
      raise UserError(f"world task: split {split!r} has no facts (a world this small cannot be split)")
    rng = random.Random(f"{NAME}/{split}/{seed}")
    return [self.example(row, rng, split) for row in take_cycled(facts, n, rng)]

  def pronoun_of(self, row: dict) -> str:
    """How an answer about `row`'s entity (a fact row or an example's meta) refers to it: "she" or "he" for
    a person (a made-up person's row carries its own), "it" for anything else."""
    if row["type"] != "person":
      return "it"
    return row.get("pronoun") or self.pronoun.get(row["entity"], "it")

  def example(self, row: dict, rng: random.Random, split: str) -> Example:
    """The question about one fact row (`World.facts()`'s form), in a random phrasing drawn from `rng`."""
    key = (row["type"], row["attribute"])
    k = rng.randrange(len(QUESTIONS[key]))
    value = str(row["value"])
    question = QUESTIONS[key][k].format(name=row["entity"])
    pronoun = self.pronoun_of(row)
    target = ANSWERS[key].format(Pronoun=pronoun.capitalize(), value=value, a_value=article(value))
    exposures = row["exposures"]
    if self.measured is not None:
      exposures = self.measured.get((row["entity"], row["attribute"]), 0)
    meta = {"entity": row["entity"], "type": row["type"], "attribute": row["attribute"],
            "exposures": exposures, "designed_exposures": row["exposures"], "template": k, "split": split}
    return Example(NAME, [{"role": "user", "content": question}], value, target, meta)

  def answer(self, completion: str, example: Example) -> frozenset[str]:
    """The answers of the asked kind the completion gives: the distinct years for a year question, else
    the candidates of the attribute's kind it names (the entity's own name removed first: "Cedar
    Textiles is in software" names no industry but software)."""
    text = completion.replace(example.meta["entity"], " ")
    attribute = example.meta["attribute"]
    if attribute in YEAR_ATTRIBUTES:
      return frozenset(_YEAR.findall(text))
    kind = "city" if attribute == "city" else attribute
    return frozenset(c for c in self.candidates[kind]
                     if re.search(rf"(?<!\w){re.escape(c)}(?!\w)", text, flags=re.IGNORECASE))

  def reward(self, completion: str, example: Example) -> float:
    """1.0 iff the answers of the asked kind in the completion (`answer`) are exactly the reference:
    a hedge between two cities, or two distinct years, scores 0."""
    return float(self.answer(completion, example) == {example.reference})
