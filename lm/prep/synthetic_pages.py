"""The good pages of the synthetic crawl, as plain text (`lm/prep/synthetic.py` lays them out).

Each writer returns the text of one page: paragraphs separated by blank lines,
sentences drawn from `synthetic_facts` so that every sentence naming an entity
together with one of its values is a deliberate statement of that fact.

  entity_fields(kind, entity, world, seed)   values + fixed colour (hobby, river...)
  person_text / city_text / company_text     a page stating the given facts
  quick_facts_text(rng, entries)             question/answer snippets of several entities
  arithmetic_text / spelling_text            tutorials (no world facts)
  html(title, text, rng)                     the page wrapped in site chrome

Colour (a person's hobby, a city's river) is a pure function of the seed and
the entity's name, so the many pages about one entity never contradict each
other. Extras are dealt from a per-entity `Deck`, so two pages about the same
entity share few sentences and MinHash does not take them for duplicates.
"""
from __future__ import annotations

import random

from lm.prep import synthetic_facts as F
from lm.prep import synthetic_text as T

PERSON_GROUPS = (("birth_year", "city"), ("profession", "employer"))


def article(word: str) -> str:
  return ("an " if word[0] in "aeiou" else "a ") + word


def slug(name: str) -> str:
  return name.lower().replace(" ", "-").replace("'", "")


def _colour_rng(seed: int, kind: str, name: str) -> random.Random:
  # String seeds hash with SHA-512: stable across processes, unlike hash().
  return random.Random(f"{seed}/{kind}/{name}")


def entity_fields(kind: str, e: dict, world, seed: int) -> dict:
  """Template fields for one entity: its values plus colour that stays fixed across its pages."""
  rng = _colour_rng(seed, kind, e["name"])
  city_names = [c["name"] for c in world.cities]
  if kind == "person":
    he = e["pronoun"]
    return dict(e, a_profession=article(e["profession"]), pronoun=he, Pronoun=he.capitalize(),
                poss="her" if he == "she" else "his", Poss="Her" if he == "she" else "His",
                obj="her" if he == "she" else "him", hobby=rng.choice(T.HOBBIES), subject=rng.choice(T.SUBJECTS),
                study_city=rng.choice([c for c in city_names if c != e["city"]]))
  if kind == "city":
    return dict(e, population=f"{e['population']:,}", river=rng.choice(T.RIVERS), century=rng.choice(T.CENTURIES),
                neighbour=rng.choice([c for c in city_names if c != e["name"]]), hours=rng.randrange(2, 9),
                festival=rng.choice(T.FESTIVALS), month=rng.choice(T.MONTHS),
                arches=rng.choice(("three", "five", "seven", "nine")))
  return dict(e, a_industry=article(e["industry"]), staff=rng.randrange(40, 990), river=rng.choice(T.RIVERS),
              other_city=rng.choice([c for c in city_names if c != e["city"]]), landmark=rng.choice(T.LANDMARKS),
              site=rng.choice(T.SITES), weekday=rng.choice(T.WEEKDAYS), product=rng.choice(T.PRODUCTS))


class Deck:
  """Deals templates without repeats until the pool runs out, then reshuffles."""

  def __init__(self, pool: tuple, rng: random.Random):
    self.pool, self.rng, self.cards = pool, rng, []

  def deal(self, n: int) -> list[str]:
    n, out = min(n, len(self.pool)), []
    while len(out) < n:
      if not self.cards:
        self.cards = list(self.pool)
        self.rng.shuffle(self.cards)
      card = self.cards.pop()
      if card not in out:
        out.append(card)
    return out


def _fact_sentences(rng: random.Random, templates: dict, groups: tuple, fields: dict) -> list[str]:
  """One statement of every attribute in `groups`: each group said in one sentence or split in two."""
  out = []
  for group in groups:
    parts = [group] if group in templates and (len(group) == 1 or rng.random() < 0.5) else [(a,) for a in group]
    out += [rng.choice(templates[p]).format(**fields) for p in parts]
  return out


def _paragraphs(sentences: list[str], size: int = 3) -> str:
  return "\n\n".join(" ".join(sentences[i:i + size]) for i in range(0, len(sentences), size))


def _arrange(rng: random.Random, facts: list[str], extras: list[str], name: str) -> list[str]:
  """Facts and extras in random order, starting with a sentence that names the entity (pronouns follow it)."""
  sentences = facts + extras
  rng.shuffle(sentences)
  first = next(i for i, s in enumerate(sentences) if name in s)
  sentences.insert(0, sentences.pop(first))
  return sentences


def person_text(rng: random.Random, fields: dict, deck: Deck, site: tuple | None = None) -> str:
  """A biography stating all four person facts once; `site` = (url, title, intro, outro) frames a profile."""
  facts = _fact_sentences(rng, F.PERSON_FACTS, PERSON_GROUPS, fields)
  body = _arrange(rng, facts, [s.format(**fields) for s in deck.deal(4 if site else 6)], fields["name"])
  if site:
    body = [site[2].format(**fields)] + body + [site[3]]
  return _paragraphs(body)


def city_text(rng: random.Random, fields: dict, deck: Deck, mentions: list[str] = (), site: tuple | None = None) -> str:
  """A city page stating its country and population once, then one sentence per person mentioned."""
  facts = _fact_sentences(rng, F.CITY_FACTS, (("country", "population"),), fields)
  body = _arrange(rng, facts, [s.format(**fields) for s in deck.deal(5)], fields["name"])
  if site:
    body = [site[2].format(**fields)] + body + [site[3]]
  text = _paragraphs(body)
  if mentions:
    text += "\n\n" + _paragraphs(["Several well-known people come from the city."] + list(mentions))
  return text


def company_text(rng: random.Random, fields: dict, deck: Deck, mentions: list[str] = (),
                 site: tuple | None = None) -> str:
  """A company page stating its industry, founding year and headquarters once, then its staff mentioned."""
  groups = rng.choice(((("industry", "founded"), ("city",)), (("founded", "city"), ("industry",)),
                       (("industry", "city"), ("founded",))))
  facts = _fact_sentences(rng, F.COMPANY_FACTS, groups, fields)
  body = _arrange(rng, facts, [s.format(**fields) for s in deck.deal(5)], fields["name"])
  if site:
    body = [site[2].format(**fields)] + body + [site[3]]
  text = _paragraphs(body)
  if mentions:
    text += "\n\n" + _paragraphs(["The staff of the company include people from many trades."] + list(mentions))
  return text


def mention(rng: random.Random, templates: tuple, person_fields: dict) -> str:
  return rng.choice(templates).format(**person_fields)


def quick_facts_text(rng: random.Random, entries: list[tuple[str, dict, tuple]]) -> str:
  """Question/answer snippets: one paragraph per (entity type, fields, attributes) entry and attribute."""
  decks = {key: (Deck(q, rng), Deck(a, rng)) for key, (q, a) in F.QA.items()}
  paras = [rng.choice(F.QUICK_FACTS_INTRO)]
  for kind, fields, attrs in entries:
    attrs = list(attrs)
    rng.shuffle(attrs)
    for a in attrs:
      questions, answers = decks[(kind, a)]
      paras.append(f"{questions.deal(1)[0].format(**fields)} {answers.deal(1)[0].format(**fields)}")
  paras.append(rng.choice(F.QUICK_FACTS_OUTRO))
  return "\n\n".join(paras)


def arithmetic_text(rng: random.Random, topic: str, first_names: list[str]) -> str:
  lines = [T.ARITHMETIC_INTRO[topic],
           "The worked examples below use small numbers so that every step can be checked by hand."]
  tips = rng.sample(T.ARITHMETIC_TIPS, 3)
  for k, story in enumerate(rng.sample(T.ARITHMETIC_STORY[topic], 3)):
    a, b = rng.randrange(2, 60), rng.randrange(2, 12)
    if topic == "subtraction":
      a += b
    if topic == "division":
      a *= b
    c = {"addition": a + b, "subtraction": a - b, "multiplication": a * b, "division": a // b}[topic]
    lines.append(story.format(who=rng.choice(first_names), a=a, b=b, c=c, things=rng.choice(T.THINGS)))
    lines.append(tips[k])
  lines.append(f"Try making up a few {topic} stories of your own and check each answer with counters.")
  return "\n\n".join([" ".join(lines[:2]), " ".join(lines[2:5]), " ".join(lines[5:])])


def spelling_text(rng: random.Random, words: list[str]) -> str:
  paras = [f"This lesson covers {len(words)} words that people often misspell: {', '.join(words)}."]
  forms, tips = rng.sample(T.SPELLING_FORMS, len(words)), rng.sample(T.SPELLING_TIPS, len(words))
  for w, form, tip in zip(words, forms, tips):
    # Described in words: letter-by-letter spellings look like symbol soup to the quality filters.
    doubled = sorted({a for a, b in zip(w.lower(), w.lower()[1:]) if a == b})
    double = (f"Notice the double {' and the double '.join(doubled)} in the middle." if doubled
              else "No letter in it is doubled.")
    vowels = sum(ch in "aeiou" for ch in w.lower())
    paras.append(form.format(w=w, n=T.NUMBER_WORDS[len(w)], first=w[0].lower(), last=w[-1],
                             v=T.NUMBER_WORDS[vowels]) + f" {double} {tip}")
  return "\n\n".join(paras)


def html(title: str, body_text: str, rng: random.Random, lang: str = "en", chrome: bool = True) -> str:
  paras = "".join(f"<p>{p}</p>\n" for p in body_text.split("\n\n"))
  nav = "".join(f'<li><a href="/{n.lower().replace(" ", "-")}">{n}</a></li>'
                for n in rng.sample(T.NAV_LINKS, 6)) if chrome else ""
  footer = "".join(f"<p>{f}</p>" for f in rng.sample(T.FOOTER_LINES, 3)) if chrome else ""
  return (f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title></head>\n'
          f"<body><header><nav><ul>{nav}</ul></nav></header>\n"
          f"<main><article><h1>{title}</h1>\n{paras}</article></main>\n"
          f"<footer>{footer}</footer></body></html>\n")
