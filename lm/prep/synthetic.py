"""A synthetic world and a small "web crawl" of it, with ground truth and known fact exposures.

`make_world(seed)` draws made-up people (birth year, home city, profession,
employer), cities (country, population) and companies (industry, founding
year, headquarters), and gives every entity an exposure count from
EXPOSURE_BUCKETS = (0, 1, 2, 4, 8, 16), dealt in turn so each bucket holds
about a sixth of each kind. `make_pages(world)` writes the web about them so
that each fact of an entity with exposure n is stated in exactly n sentences
of the clean text, in varied wordings and places:

  round 1      the entity's encyclopedia page (all its facts)
  round 2      people: birth year + city on their city's page and profession +
               employer on their employer's page (a profile when either page
               does not exist); cities and companies: a travel guide / listing
  rounds 3..n  alternately question/answer snippets on shared "quick facts"
               pages and rewritten profiles on other sites (people), or one
               guide / listing to every two snippets (cities, companies)

Exposure-0 entities exist in world.json (so they can be asked about) but their
facts are never stated; a person of exposure 0 is never named at all. A fact
is stated by a sentence that names the entity in full and gives the value;
no other sentence of the clean text names an entity together with one of its
values (`count_exposures` checks this by searching the text). Counts are for
the text a good pipeline keeps (`clean_documents`): blocklisted and foreign
pages are about other, made-up people, but the exact and near duplicates copy
good pages and add exposures if a pipeline fails to drop them.

Default size: 96 people (16 per bucket), 16 cities, 12 companies; about 430
good pages, 0.33M characters of clean text (≈ 75k tokens with a 2k BPE vocab
trained on it): 2-4M training tokens of it alone repeat it 25-50 times.

The crawl also holds what a real one does — navigation-only pages, pages on
blocklisted domains, pages in other languages, repetitive spam, exact and near
duplicates, non-HTML responses. Every page carries a label (`Page.kind`,
`Page.expect`) that the web pipeline never sees, so each filter's precision
and recall can be measured (`experiments/prepare_data.py`).

  write_crawl(out_dir, seed=0)   → crawl-0000.warc.gz ..., labels.jsonl, world.json
  clean_documents(seed=0)        → the plain text of the good pages (embedded corpus)

Everything is a pure function of the seed: same seed, same bytes.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import re
from typing import Iterable, Iterator

from lm.prep import synthetic_crawl
from lm.prep import synthetic_facts as F
from lm.prep import synthetic_pages as P
from lm.prep import synthetic_text as T

EXPOSURE_BUCKETS = (0, 1, 2, 4, 8, 16)
ATTRIBUTES = {"person": ("birth_year", "city", "profession", "employer"), "city": ("country", "population"),
              "company": ("industry", "founded", "city")}
KEEP_KINDS = ("person", "profile", "city", "guide", "company", "listing", "quick_facts", "arithmetic", "spelling")
BLOCKLISTED_DOMAINS = synthetic_crawl.BLOCKLISTED_DOMAINS
Page = synthetic_crawl.Page
QUICK_FACTS_PER_PAGE = 4


@dataclasses.dataclass
class World:
  people: list[dict]
  cities: list[dict]
  companies: list[dict]

  def entities(self, kind: str) -> list[dict]:
    return {"person": self.people, "city": self.cities, "company": self.companies}[kind]

  def facts(self) -> list[dict]:
    """The ground-truth table: (entity, type, attribute, value, exposures) rows."""
    return [{"entity": e["name"], "type": kind, "attribute": a, "value": e[a], "exposures": e["exposures"]}
            for kind, attrs in ATTRIBUTES.items() for e in self.entities(kind) for a in attrs]


def _unique_names(n: int, make, taken=()) -> list[str]:
  names: list[str] = []
  seen = set(taken)
  while len(names) < n:
    name = make()
    if name not in seen:
      seen.add(name)
      names.append(name)
  return names


def _person_name(rng: random.Random) -> str:
  return f"{rng.choice(T.FIRST_NAMES)} {rng.choice(T.SURNAME_HEADS)}{rng.choice(T.SURNAME_TAILS)}"


def make_world(seed: int = 0, n_people: int = 96, n_cities: int = 16, n_companies: int = 12) -> World:
  rng = random.Random(seed)
  # Dealt from the top bucket down: entity 0 of each kind is the most exposed, every bucket equally full.
  bucket = lambda i: EXPOSURE_BUCKETS[-1 - i % len(EXPOSURE_BUCKETS)]
  city_names = _unique_names(n_cities, lambda: rng.choice(T.PLACE_HEADS) + rng.choice(T.PLACE_TAILS))
  cities = [{"name": c, "country": rng.choice(T.COUNTRIES), "exposures": bucket(i),
             "population": rng.randrange(8, 900) * 1000 + rng.randrange(1000)} for i, c in enumerate(city_names)]
  company_names = _unique_names(n_companies, lambda: f"{rng.choice(T.COMPANY_HEADS)} {rng.choice(T.COMPANY_TAILS)}")
  companies = [{"name": c, "industry": rng.choice(T.INDUSTRIES), "founded": rng.randrange(1850, 2010),
                "city": rng.choice(city_names), "exposures": bucket(i)} for i, c in enumerate(company_names)]
  person_names = _unique_names(n_people, lambda: _person_name(rng))
  people = [{"name": p, "birth_year": rng.randrange(1930, 2001), "city": rng.choice(city_names),
             "profession": rng.choice(T.PROFESSIONS), "employer": rng.choice(company_names),
             "pronoun": rng.choice(("she", "he")), "exposures": bucket(i)} for i, p in enumerate(person_names)]
  return World(people, cities, companies)


def _page(url: str, title: str, text: str, kind: str, rng: random.Random, **kw) -> Page:
  return Page(url, P.html(title, text, rng), kind, text, title, **kw)


def _entity_pages(world: World, seed: int, rng: random.Random) -> tuple[list[Page], list[Page]]:
  """(encyclopedia pages of people and cities, every other good page about the world), in the order written."""
  fields = {(k, e["name"]): P.entity_fields(k, e, world, seed) for k in ATTRIBUTES for e in world.entities(k)}
  decks = {key: P.Deck({"person": F.PERSON_EXTRA, "city": F.CITY_EXTRA, "company": F.COMPANY_EXTRA}[key[0]],
                       random.Random(f"{seed}/deck/{key[0]}/{key[1]}")) for key in fields}
  exposed = {(k, e["name"]) for k in ATTRIBUTES for e in world.entities(k) if e["exposures"] >= 1}
  mentions: dict[tuple, list[str]] = {key: [] for key in fields}
  snippets: list[tuple] = []
  encyclopedia, other = [], []

  for p in world.people:
    f, deck, slug = fields[("person", p["name"])], decks[("person", p["name"])], P.slug(p["name"])
    profiles = 0
    for k in range(p["exposures"]):
      if k == 0:
        encyclopedia.append(_page(f"https://wiki.example.org/people/{slug}", p["name"], P.person_text(rng, f, deck),
                                  "person", rng))
      elif k == 1 and {("city", p["city"]), ("company", p["employer"])} <= exposed:
        mentions[("city", p["city"])].append(P.mention(rng, F.CITY_MENTION, f))
        mentions[("company", p["employer"])].append(P.mention(rng, F.COMPANY_MENTION, f))
      elif k >= 2 and k % 2 == 0:
        snippets.append(("person", f, ATTRIBUTES["person"]))
      else:
        site = F.PROFILE_SITES[(profiles + len(slug)) % len(F.PROFILE_SITES)]
        profiles += 1
        other.append(_page(site[0].format(slug=slug, k=k), site[1].format(**f), P.person_text(rng, f, deck, site),
                           "profile", rng))

  for kind, sites, alt_kind in (("city", F.GUIDE_SITES, "guide"), ("company", F.LISTING_SITES, "listing")):
    for e in world.entities(kind):
      key = (kind, e["name"])
      f, deck, slug = fields[key], decks[key], P.slug(e["name"])
      write = P.city_text if kind == "city" else P.company_text
      for k in range(e["exposures"]):
        if k == 0 and kind == "city":
          encyclopedia.append(_page(f"https://wiki.example.org/places/{slug}", e["name"],
                                    write(rng, f, deck, mentions[key]), "city", rng))
        elif k == 0:
          other.append(_company_page(rng, f, deck, mentions[key], world))
        elif k % 3 == 1:
          site = sites[k // 3 % len(sites)]
          other.append(_page(site[0].format(slug=slug, k=k), site[1].format(**f), write(rng, f, deck, site=site),
                             alt_kind, rng))
        else:
          snippets.append((kind, f, ATTRIBUTES[kind]))

  for i, entries in enumerate(_spread(rng, snippets, QUICK_FACTS_PER_PAGE)):
    other.append(_page(f"https://library.example.org/quick-facts/{i}", f"Quick facts, part {i + 1}",
                       P.quick_facts_text(rng, entries), "quick_facts", rng))
  return encyclopedia, other


def _spread(rng: random.Random, snippets: list[tuple], per_page: int) -> list[list[tuple]]:
  """Snippets dealt onto pages so that no page repeats an entity (its rounds are adjacent, pages cycle)."""
  order = {}
  for s in snippets:
    order.setdefault(s[1]["name"], []).append(s)
  names = list(order)
  rng.shuffle(names)
  flat = [s for name in names for s in order[name]]
  n_pages = -(-len(flat) // per_page)
  pages = [flat[i::n_pages] for i in range(n_pages)]
  for page in pages:
    rng.shuffle(page)
  return pages


def _company_page(rng: random.Random, f: dict, deck: P.Deck, mentions: list[str], world: World) -> Page:
  """The company's own site: about text (kept) plus a contact paragraph of PII (removed by the pipeline)."""
  about = P.company_text(rng, f, deck, mentions)
  contact, pii = synthetic_crawl.contact_paragraph(rng, f["name"], rng.choice(world.people)["name"])
  return Page(f"https://{P.slug(f['name'])}.example.com/about", P.html(f["name"], about + "\n\n" + contact, rng),
              "company", about, f["name"], pii=pii)


def _tutorial_pages(world: World, rng: random.Random) -> list[Page]:
  first_names = [p["name"].split()[0] for p in world.people]
  pages = []
  for i, topic in enumerate(T.ARITHMETIC_TOPICS * 3):
    title = f"Learning {topic}, part {i // len(T.ARITHMETIC_TOPICS) + 1}"
    pages.append(_page(f"https://learn.example.edu/arithmetic/{topic}-{i}", title,
                       P.arithmetic_text(rng, topic, first_names), "arithmetic", rng))
  words = list(T.SPELLING_WORDS)
  rng.shuffle(words)
  for i in range(0, len(words), 5):
    title = f"Spelling lesson {i // 5 + 1}"
    pages.append(_page(f"https://learn.example.edu/spelling/lesson-{i // 5}", title,
                       P.spelling_text(rng, words[i:i + 5]), "spelling", rng))
  return pages


def make_pages(world: World, seed: int = 0) -> list[Page]:
  """Every page of the crawl: the good pages shuffled the way a crawl interleaves sites, then the junk."""
  rng = random.Random(seed + 1)
  encyclopedia, other = _entity_pages(world, seed, rng)
  pages = encyclopedia + other + _tutorial_pages(world, rng)
  # Junk about made-up people outside the world: if a filter lets it through, no world fact gains an exposure.
  outsiders = _outsiders(world, seed, max(len(world.people) // 10, 8) + max(len(world.people) // 4, 12))
  junk = synthetic_crawl.junk_pages(world, outsiders, encyclopedia, seed, rng)
  # Originals come before their copies, so MinHash keeps the original: the
  # crawl visits the encyclopedia first, the mirrors later.
  rng.shuffle(pages)
  rng.shuffle(junk)
  return pages + junk


def _outsiders(world: World, seed: int, n: int) -> list[dict]:
  """Made-up people who are not in the world, with the fields a biography needs."""
  rng = random.Random(f"{seed}/outsiders")
  names = _unique_names(n, lambda: _person_name(rng), taken={p["name"] for p in world.people})
  out = []
  for name in names:
    city = rng.choice(world.cities)
    p = {"name": name, "birth_year": rng.randrange(1930, 2001), "city": city["name"], "country": city["country"],
         "profession": rng.choice(T.PROFESSIONS), "employer": rng.choice(world.companies)["name"],
         "pronoun": rng.choice(("she", "he"))}
    out.append(P.entity_fields("person", p, world, seed))
  return out


def write_crawl(out_dir: str, seed: int = 0, n_files: int = 2, n_people: int = 96, n_cities: int = 16,
                n_companies: int = 12) -> dict:
  """Writes the crawl as `n_files` WARC files plus labels.jsonl and world.json; returns a summary."""
  world = make_world(seed, n_people, n_cities, n_companies)
  pages = make_pages(world, seed)
  os.makedirs(out_dir, exist_ok=True)
  synthetic_crawl.write_warcs(out_dir, pages, n_files, random.Random(seed + 2))
  with open(os.path.join(out_dir, "labels.jsonl"), "w") as fh:
    for p in pages:
      row = {k: v for k, v in dataclasses.asdict(p).items() if k not in ("html", "text", "title")}
      fh.write(json.dumps(row) + "\n")
  with open(os.path.join(out_dir, "world.json"), "w") as fh:
    json.dump({"seed": seed, "exposure_buckets": EXPOSURE_BUCKETS, "people": world.people, "cities": world.cities,
               "companies": world.companies, "facts": world.facts()}, fh, indent=1)
  counts: dict[str, int] = {}
  for p in pages:
    counts[p.kind] = counts.get(p.kind, 0) + 1
  return {"pages": len(pages), "files": n_files, "kinds": counts}


def read_labels(crawl_dir: str) -> dict[str, dict]:
  """labels.jsonl as {url: label row}."""
  with open(os.path.join(crawl_dir, "labels.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["url"]: r for r in rows}


def clean_documents(seed: int = 0, n_people: int = 96, n_cities: int = 16, n_companies: int = 12) -> Iterator[str]:
  """The good pages' text without site chrome or contact details: what a perfect pipeline keeps."""
  world = make_world(seed, n_people, n_cities, n_companies)
  for page in make_pages(world, seed):
    if page.kind in KEEP_KINDS:
      yield f"{page.title}\n\n{page.text}"


_SENTENCE_END = re.compile(r"(?<=[.?!])\s+|\n+")


def count_exposures(documents: Iterable[str], world: World) -> dict[tuple[str, str], int]:
  """{(entity, attribute): sentences naming the entity in full and stating the value}, searched in the text."""
  values = {e["name"]: [(a, f"{e[a]:,}" if a == "population" else str(e[a])) for a in attrs]
            for kind, attrs in ATTRIBUTES.items() for e in world.entities(kind)}
  bounded = lambda s: rf"(?<!\w){re.escape(s)}(?!\w)"
  names = re.compile("|".join(bounded(n) for n in sorted(values, key=len, reverse=True)))
  patterns = {v: re.compile(bounded(v)) for pairs in values.values() for _, v in pairs}
  counts = {(name, a): 0 for name, pairs in values.items() for a, _ in pairs}
  for doc in documents:
    for sentence in _SENTENCE_END.split(doc):
      for name in set(names.findall(sentence)):
        for a, v in values[name]:
          counts[(name, a)] += bool(patterns[v].search(sentence))
  return counts
