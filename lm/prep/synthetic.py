"""A synthetic world and a small "web crawl" of it, with ground truth.

`make_world(seed)` draws made-up people (birth year, city, profession,
employer), cities (country, population) and companies (industry, founding
year, headquarters). `make_pages(world)` writes the web that talks about them:
encyclopedia pages, arithmetic and spelling tutorials and company pages with
contact details, plus what a real crawl also holds — navigation-only pages,
pages on blocklisted domains, pages in other languages, repetitive spam,
exact and near duplicates, non-HTML responses. Every page carries a label
(`Page.kind`, `Page.expect`) that the web pipeline never sees, so each
filter's precision and recall can be measured (`experiments/prepare_data.py`).

  write_crawl(out_dir, seed=0)   → crawl-0000.warc.gz ..., labels.jsonl, world.json
  clean_documents(seed=0)        → the plain text of the good pages (embedded corpus)

Everything is a pure function of the seed: same seed, same bytes.
"""
from __future__ import annotations

import dataclasses
import io
import ipaddress
import json
import os
import random
import uuid
from typing import Iterator

from lm.prep import synthetic_text as T

# Domains from datatrove's shipped URL blocklist (checked in tests/test_synthetic.py).
BLOCKLISTED_DOMAINS = ("airtellotterywinners.com", "amazononlinewinner.com", "attorneywinner.com",
                       "baronloan.org", "approvedcasinos.com", "applecasinos.com",
                       "allcasinoreviews.com", "takebinance.com")
KEEP_KINDS = ("person", "city", "company", "arithmetic", "spelling")


@dataclasses.dataclass(frozen=True)
class Page:
  url: str
  html: str
  kind: str                # person | city | company | arithmetic | spelling | boilerplate | blocklisted
                           # | non_english | low_quality | exact_duplicate | near_duplicate | non_html
  text: str = ""           # the page's main content as plain text ("" for junk)
  title: str = ""
  expect: str = "keep"     # keep | drop: what a good pipeline does with it
  lang: str = "en"
  dup_of: str = ""         # url of the page this one copies
  pii: tuple = ()          # strings that must not survive in kept text
  content_type: str = "text/html; charset=utf-8"


@dataclasses.dataclass
class World:
  people: list[dict]
  cities: list[dict]
  companies: list[dict]

  def facts(self) -> list[dict]:
    """The ground-truth table as (entity, type, attribute, value) rows."""
    rows = []
    for kind, items, attrs in (("person", self.people, ("birth_year", "city", "profession", "employer")),
                               ("city", self.cities, ("country", "population")),
                               ("company", self.companies, ("industry", "founded", "city"))):
      for e in items:
        rows += [{"entity": e["name"], "type": kind, "attribute": a, "value": e[a]} for a in attrs]
    return rows


def _unique_names(rng: random.Random, n: int, make) -> list[str]:
  names: list[str] = []
  seen = set()
  while len(names) < n:
    name = make()
    if name not in seen:
      seen.add(name)
      names.append(name)
  return names


def make_world(seed: int = 0, n_people: int = 200, n_cities: int = 30, n_companies: int = 24) -> World:
  rng = random.Random(seed)
  city_names = _unique_names(rng, n_cities, lambda: rng.choice(T.PLACE_HEADS) + rng.choice(T.PLACE_TAILS))
  cities = [{"name": c, "country": rng.choice(T.COUNTRIES),
             "population": rng.randrange(8, 900) * 1000 + rng.randrange(1000)} for c in city_names]
  company_names = _unique_names(rng, n_companies,
                                lambda: f"{rng.choice(T.COMPANY_HEADS)} {rng.choice(T.COMPANY_TAILS)}")
  companies = [{"name": c, "industry": rng.choice(T.INDUSTRIES), "founded": rng.randrange(1850, 2010),
                "city": rng.choice(city_names)} for c in company_names]
  person_names = _unique_names(
      rng, n_people,
      lambda: f"{rng.choice(T.FIRST_NAMES)} {rng.choice(T.SURNAME_HEADS)}{rng.choice(T.SURNAME_TAILS)}")
  people = [{"name": p, "birth_year": rng.randrange(1930, 2001), "city": rng.choice(city_names),
             "profession": rng.choice(T.PROFESSIONS), "employer": rng.choice(company_names),
             "pronoun": rng.choice(("she", "he"))} for p in person_names]
  return World(people, cities, companies)


# ----------------------------------------------------------------------------- page text


def _person_text(rng: random.Random, p: dict, world: World) -> str:
  city = next(c for c in world.cities if c["name"] == p["city"])
  he = p["pronoun"]
  fields = dict(p, country=city["country"], pronoun=he, pronoun_cap=he.capitalize(),
                possessive="her" if he == "she" else "his", object="her" if he == "she" else "him",
                possessive_cap="Her" if he == "she" else "His",
                subject=rng.choice(T.SUBJECTS), hobby=rng.choice(T.HOBBIES),
                other_city=rng.choice(world.cities)["name"],
                year_a=p["birth_year"] + rng.randrange(25, 40), year_b=p["birth_year"] + rng.randrange(30, 50))
  facts = [rng.choice(T.PERSON_BIRTH), rng.choice(T.PERSON_WORK)]
  extras = rng.sample(T.PERSON_EXTRA, 7)
  sentences = [s.format(**fields) for s in facts + extras]
  return "\n\n".join([" ".join(sentences[:3]), " ".join(sentences[3:6]), " ".join(sentences[6:])])


def _city_text(rng: random.Random, c: dict, world: World) -> str:
  born = [p for p in world.people if p["city"] == c["name"]][:3]
  residents = ", ".join(f"{p['name']}, a {p['profession']}" for p in born) or "several well-known artists"
  fields = dict(c, river=rng.choice(T.RIVERS), century=rng.choice(T.CENTURIES),
                neighbour=rng.choice([x for x in world.cities if x is not c])["name"],
                industry=rng.choice(T.INDUSTRIES), year_a=rng.randrange(1700, 1950),
                year_b=rng.randrange(1800, 1990), hours=rng.randrange(2, 9),
                festival=rng.choice(T.FESTIVALS), month=rng.choice(T.MONTHS),
                arches=rng.choice(("three", "five", "seven", "nine")), residents=residents)
  sentences = [rng.choice(T.CITY_FACTS).format(**fields)]
  sentences += [s.format(**fields) for s in rng.sample(T.CITY_EXTRA, 7)]
  return "\n\n".join([" ".join(sentences[:3]), " ".join(sentences[3:6]), " ".join(sentences[6:])])


def _company_text(rng: random.Random, c: dict, world: World) -> tuple[str, str, tuple]:
  """(public text, contact paragraph, the PII strings in it)."""
  city = next(x for x in world.cities if x["name"] == c["city"])
  staff = [p for p in world.people if p["employer"] == c["name"]][:3]
  fields = dict(c, country=city["country"], staff=rng.randrange(40, 3000), river=rng.choice(T.RIVERS),
                export=rng.choice([x for x in T.COUNTRIES if x != city["country"]]),
                year_a=rng.randrange(c["founded"] + 1, 2024), year_b=rng.randrange(c["founded"] + 1, 2024),
                other_city=rng.choice(world.cities)["name"], landmark=rng.choice(T.LANDMARKS),
                site=rng.choice(T.SITES), weekday=rng.choice(T.WEEKDAYS), product=rng.choice(T.PRODUCTS))
  about = [rng.choice(T.COMPANY_FACTS).format(**fields)] + [s.format(**fields) for s in rng.sample(T.COMPANY_EXTRA, 5)]
  if staff:
    about.append("Its staff include " + ", ".join(f"{p['name']} ({p['profession']})" for p in staff) + ".")
  slug = c["name"].lower().replace(" ", "")
  person = rng.choice(world.people)["name"].lower().replace(" ", ".")
  pii = dict(email=f"press@{slug}.example-mail.net", email2=f"{person}@{slug}.example-mail.net",
             ip=_public_ip(rng), ip2=_public_ip(rng), private_ip=f"192.168.{rng.randrange(0, 255)}.{rng.randrange(1, 255)}")
  contact = " ".join(s.format(**pii) for s in T.COMPANY_CONTACT)
  return " ".join(about), contact, (pii["email"], pii["email2"], pii["ip"], pii["ip2"])


def _public_ip(rng: random.Random) -> str:
  """A globally routable IPv4 address (private, loopback and reserved ranges are not PII)."""
  while True:
    ip = ".".join(str(rng.randrange(1, 255)) for _ in range(4))
    if ipaddress.ip_address(ip).is_global:
      return ip


def _arithmetic_text(rng: random.Random, topic: str, world: World) -> str:
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
    who = rng.choice(world.people)["name"].split()[0]
    lines.append(story.format(who=who, a=a, b=b, c=c, things=rng.choice(T.THINGS)))
    lines.append(tips[k])
  lines.append(f"Try making up a few {topic} stories of your own and check each answer with counters.")
  return "\n\n".join([" ".join(lines[:2]), " ".join(lines[2:5]), " ".join(lines[5:])])


def _spelling_text(rng: random.Random, words: list[str]) -> str:
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


def _foreign_text(rng: random.Random, lang: str, world: World) -> str:
  p = rng.choice(world.people)
  city = next(c for c in world.cities if c["name"] == p["city"])
  sents = [s.format(**p, country=city["country"]) for s in T.FOREIGN[lang]]
  return " ".join(sents[:3]) + "\n\n" + " ".join(sents[3:])


def _low_quality_text(rng: random.Random, variant: int) -> str:
  spam = rng.choice(T.SPAM_PHRASES)
  return [
      "\n".join([f"{spam.capitalize()}!"] * 40),                                         # repeated lines
      " ".join([spam] * 60),                                                              # keyword stuffing
      "\n".join(f"{rng.choice(T.THINGS)} {rng.randrange(100)}" for _ in range(80)),       # short list lines
      "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 12,                   # lorem ipsum filler
      " ".join(f"#{w}" for w in spam.split() * 20),                                       # hashtag soup
      "Great post. Thanks!",                                                              # too short
  ][variant % 6]


# ----------------------------------------------------------------------------- HTML


def _html(title: str, body_text: str, rng: random.Random, lang: str = "en", chrome: bool = True) -> str:
  paras = "".join(f"<p>{p}</p>\n" for p in body_text.split("\n\n"))
  nav = "".join(f'<li><a href="/{n.lower().replace(" ", "-")}">{n}</a></li>'
                for n in rng.sample(T.NAV_LINKS, 6)) if chrome else ""
  footer = "".join(f"<p>{f}</p>" for f in rng.sample(T.FOOTER_LINES, 3)) if chrome else ""
  return (f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title></head>\n'
          f"<body><header><nav><ul>{nav}</ul></nav></header>\n"
          f"<main><article><h1>{title}</h1>\n{paras}</article></main>\n"
          f"<footer>{footer}</footer></body></html>\n")


def _slug(name: str) -> str:
  return name.lower().replace(" ", "-").replace("'", "")


def make_pages(world: World, seed: int = 0) -> list[Page]:
  """Every page of the crawl, shuffled the way a crawl interleaves sites."""
  rng = random.Random(seed + 1)
  good: list[Page] = []
  for p in world.people:
    text = _person_text(rng, p, world)
    good.append(Page(f"https://wiki.example.org/people/{_slug(p['name'])}", _html(p["name"], text, rng), "person",
                     text, p["name"]))
  for c in world.cities:
    text = _city_text(rng, c, world)
    good.append(Page(f"https://wiki.example.org/places/{_slug(c['name'])}", _html(c["name"], text, rng), "city",
                     text, c["name"]))
  pages: list[Page] = list(good)
  for c in world.companies:
    about, contact, pii = _company_text(rng, c, world)
    text = about + "\n\n" + contact
    pages.append(Page(f"https://{_slug(c['name'])}.example.com/about", _html(c["name"], text, rng),
                      "company", about, c["name"], pii=pii))
  for i, topic in enumerate(T.ARITHMETIC_TOPICS * 3):
    text = _arithmetic_text(rng, topic, world)
    title = f"Learning {topic}, part {i // len(T.ARITHMETIC_TOPICS) + 1}"
    pages.append(Page(f"https://learn.example.edu/arithmetic/{topic}-{i}", _html(title, text, rng),
                      "arithmetic", text, title))
  words = list(T.SPELLING_WORDS)
  rng.shuffle(words)
  for i in range(0, len(words), 5):
    text = _spelling_text(rng, words[i:i + 5])
    title = f"Spelling lesson {i // 5 + 1}"
    pages.append(Page(f"https://learn.example.edu/spelling/lesson-{i // 5}", _html(title, text, rng),
                      "spelling", text, title))

  n = len(world.people)
  junk: list[Page] = []
  for i in range(max(n // 10, 6)):
    junk.append(Page(f"https://portal{i}.example.net/index.html", _html("Welcome", "", rng), "boilerplate", expect="drop"))
  for i in range(max(n // 10, 8)):
    p = rng.choice(world.people)
    text = _person_text(random.Random(seed * 7919 + i), p, world)
    junk.append(Page(f"https://{BLOCKLISTED_DOMAINS[i % len(BLOCKLISTED_DOMAINS)]}/profile/{i}",
                     _html(p["name"], text, rng), "blocklisted", expect="drop"))
  langs = sorted(T.FOREIGN)
  for i in range(max(n // 4, 12)):
    lang = langs[i % len(langs)]
    junk.append(Page(f"https://{lang}.wiki.example.org/page/{i}", _html("Biographie", _foreign_text(rng, lang, world), rng, lang),
                     "non_english", expect="drop", lang=lang))
  for i in range(max(n // 6, 12)):
    junk.append(Page(f"https://deals{i}.example.biz/offer", _html("Best offers", _low_quality_text(rng, i), rng),
                     "low_quality", expect="drop"))
  for i, orig in enumerate(rng.sample(good, max(n // 10, 6))):
    junk.append(Page(f"https://mirror.example.info/copy/{i}", orig.html, "exact_duplicate", expect="drop", dup_of=orig.url))
  for i, orig in enumerate(rng.sample(good, max(n // 6, 10))):
    text = orig.text.replace(". ", ", and ", 1) + "\n\nThis article was copied from an encyclopedia."
    junk.append(Page(f"https://scraper{i}.example.info/{_slug(orig.title)}", _html(orig.title, text, rng),
                     "near_duplicate", expect="drop", dup_of=orig.url))
  for i in range(4):
    junk.append(Page(f"https://wiki.example.org/robots-{i}.txt", "User-agent: *\nDisallow: /private/\n",
                     "non_html", expect="drop", content_type="text/plain"))
  # Originals come before their copies, so MinHash keeps the original: the
  # crawl visits the encyclopedia first, the mirrors later.
  rng.shuffle(pages)
  rng.shuffle(junk)
  return pages + junk


# ----------------------------------------------------------------------------- WARC


def _warc_record(writer, rng: random.Random, page: Page, date: str) -> None:
  from warcio.statusandheaders import StatusAndHeaders
  body = page.html.encode("utf-8")
  http = StatusAndHeaders("200 OK", [("Content-Type", page.content_type), ("Content-Length", str(len(body)))],
                          protocol="HTTP/1.1")
  rec_id = f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>"
  record = writer.create_warc_record(page.url, "response", payload=io.BytesIO(body), http_headers=http,
                                     warc_headers_dict={"WARC-Record-ID": rec_id, "WARC-Date": date})
  writer.write_record(record)


def write_crawl(out_dir: str, seed: int = 0, n_files: int = 2, n_people: int = 200, n_cities: int = 30,
                n_companies: int = 24) -> dict:
  """Writes the crawl as `n_files` WARC files plus labels.jsonl and world.json; returns a summary."""
  from warcio.warcwriter import WARCWriter
  world = make_world(seed, n_people, n_cities, n_companies)
  pages = make_pages(world, seed)
  os.makedirs(out_dir, exist_ok=True)
  rng = random.Random(seed + 2)
  # Contiguous slices keep every original in a file at or before its copies.
  per_file = -(-len(pages) // n_files)
  for f in range(n_files):
    # Gzip per record, as Common Crawl does (zlib's gzip header has no timestamp: same seed, same bytes).
    with open(os.path.join(out_dir, f"crawl-{f:04d}.warc.gz"), "wb") as fh:
      writer = WARCWriter(fh, gzip=True)
      for k, page in enumerate(pages[f * per_file:(f + 1) * per_file]):
        _warc_record(writer, rng, page, f"2024-01-{1 + f % 28:02d}T00:{k // 60 % 60:02d}:{k % 60:02d}Z")
  with open(os.path.join(out_dir, "labels.jsonl"), "w") as fh:
    for p in pages:
      row = {k: v for k, v in dataclasses.asdict(p).items() if k not in ("html", "text", "title")}
      fh.write(json.dumps(row) + "\n")
  with open(os.path.join(out_dir, "world.json"), "w") as fh:
    json.dump({"seed": seed, "people": world.people, "cities": world.cities, "companies": world.companies,
               "facts": world.facts()}, fh, indent=1)
  counts: dict[str, int] = {}
  for p in pages:
    counts[p.kind] = counts.get(p.kind, 0) + 1
  return {"pages": len(pages), "files": n_files, "kinds": counts}


def read_labels(crawl_dir: str) -> dict[str, dict]:
  """labels.jsonl as {url: label row}."""
  with open(os.path.join(crawl_dir, "labels.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["url"]: r for r in rows}


def clean_documents(seed: int = 0, n_people: int = 200, n_cities: int = 30, n_companies: int = 24) -> Iterator[str]:
  """The good pages' text without site chrome or contact details: what a perfect pipeline keeps."""
  world = make_world(seed, n_people, n_cities, n_companies)
  for page in make_pages(world, seed):
    if page.kind in KEEP_KINDS:
      yield f"{page.title}\n\n{page.text}"
