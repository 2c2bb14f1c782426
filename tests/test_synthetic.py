"""The synthetic world: deterministic, labelled, facts consistent with the pages, exposures true of the text."""
import collections
import json
import os
import re

from lm.data import corpus
from lm.prep import synthetic, synthetic_pages


def _sentences(doc):
  return [s for s in re.split(r"(?<=[.?!])\s+|\n+", doc) if s]


def _stated(sentence, name, value):
  """The sentence names the entity in full and states the value (whole words, case-sensitive)."""
  word = lambda s: re.search(rf"(?<!\w){re.escape(s)}(?!\w)", sentence)
  return bool(word(name) and word(value))


def _value(fact):
  return f"{fact['value']:,}" if fact["attribute"] == "population" else str(fact["value"])


def test_world_is_deterministic_and_consistent():
  a, b = synthetic.make_world(3), synthetic.make_world(3)
  assert a.people == b.people and a.cities == b.cities and a.companies == b.companies
  assert synthetic.make_world(4).people != a.people
  cities = {c["name"] for c in a.cities}
  companies = {c["name"] for c in a.companies}
  assert len({p["name"] for p in a.people}) == len(a.people) == 96 and len(cities) == 16 and len(companies) == 12
  for p in a.people:
    assert p["city"] in cities and p["employer"] in companies and 1930 <= p["birth_year"] <= 2000
  for kind in ("person", "city", "company"):
    buckets = collections.Counter(e["exposures"] for e in a.entities(kind))
    assert set(buckets) == set(synthetic.EXPOSURE_BUCKETS)
    assert max(buckets.values()) - min(buckets.values()) <= 1  # every bucket equally full
  facts = a.facts()
  assert {"entity": a.people[0]["name"], "type": "person", "attribute": "birth_year",
          "value": a.people[0]["birth_year"], "exposures": a.people[0]["exposures"]} in facts
  assert len(facts) == 96 * 4 + 16 * 2 + 12 * 3


def test_encyclopedia_pages_state_the_facts():
  world = synthetic.make_world(0, n_people=40, n_cities=10, n_companies=8)
  pages = {p.url: p for p in synthetic.make_pages(world, 0)}
  for person in world.people:
    page = pages.get(f"https://wiki.example.org/people/{synthetic_pages.slug(person['name'])}")
    assert (page is None) == (person["exposures"] == 0)
    for value in (person["name"], str(person["birth_year"]), person["city"], person["profession"], person["employer"]):
      assert page is None or value in page.text, (value, page.text)
  for city in world.cities:
    page = pages.get(f"https://wiki.example.org/places/{synthetic_pages.slug(city['name'])}")
    assert (page is None) == (city["exposures"] == 0)
    assert page is None or (city["country"] in page.text and f"{city['population']:,}" in page.text)


def test_exposures_are_true_of_the_clean_text():
  """Every fact is stated in exactly `exposures` sentences; exposure-0 people are never named."""
  for seed, sizes in ((0, {}), (5, dict(n_people=60, n_cities=10, n_companies=8))):
    world = synthetic.make_world(seed, **sizes)
    docs = list(synthetic.clean_documents(seed, **sizes))
    sentences = [s for d in docs for s in _sentences(d)]
    counted = synthetic.count_exposures(docs, world)
    for fact in world.facts():
      n = sum(_stated(s, fact["entity"], _value(fact)) for s in sentences if fact["entity"] in s)
      assert n == fact["exposures"] == counted[(fact["entity"], fact["attribute"])], (fact, n)
    text = "\n".join(docs)
    for p in world.people:
      assert (p["name"] in text) == (p["exposures"] > 0), p
    # Facts come in varied places: the most exposed people are stated on several kinds of page.
    pages = synthetic.make_pages(world, seed)
    kinds = [{page.kind for page in pages if p["name"] in page.text} for p in world.people if p["exposures"] == 16]
    assert all(k >= {"person", "profile", "quick_facts"} for k in kinds)
    assert set.union(*kinds) >= {"person", "profile", "quick_facts", "city", "company"}


def test_junk_adds_no_exposures():
  """Pages a good pipeline drops talk about made-up outsiders, or copy good pages (then labelled dup_of)."""
  world = synthetic.make_world(0)
  pages = synthetic.make_pages(world, 0)
  by_url = {p.url: p for p in pages}
  names = [p["name"] for p in world.people]
  for page in pages:
    if page.expect == "drop" and page.kind not in ("exact_duplicate", "near_duplicate"):
      assert not any(n in page.html for n in names), (page.url, page.kind)
    if page.kind in ("exact_duplicate", "near_duplicate"):
      assert by_url[page.dup_of].kind in ("person", "city")
  good = [p for p in pages if p.expect == "keep"]
  assert pages[:len(good)] == good  # originals precede every copy in crawl order


def test_crawl_files_and_labels(tmp_path):
  s1 = synthetic.write_crawl(str(tmp_path / "a"), seed=0, n_files=2, n_people=40, n_cities=10, n_companies=8)
  s2 = synthetic.write_crawl(str(tmp_path / "b"), seed=0, n_files=2, n_people=40, n_cities=10, n_companies=8)
  assert s1 == s2
  for name in ("crawl-0000.warc.gz", "crawl-0001.warc.gz", "labels.jsonl", "world.json"):
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
  labels = synthetic.read_labels(str(tmp_path / "a"))
  assert len(labels) == s1["pages"]
  kinds = {r["kind"] for r in labels.values()}
  assert kinds == set(synthetic.KEEP_KINDS) | {"boilerplate", "blocklisted", "non_english", "low_quality",
                                               "exact_duplicate", "near_duplicate", "non_html"}
  for r in labels.values():
    assert r["expect"] == ("keep" if r["kind"] in synthetic.KEEP_KINDS else "drop")
    if r["kind"] in ("exact_duplicate", "near_duplicate"):
      assert labels[r["dup_of"]]["kind"] in ("person", "city")
    if r["kind"] == "company":
      assert len(r["pii"]) == 4
  world = json.loads((tmp_path / "a" / "world.json").read_text())
  assert len(world["people"]) == 40 and world["facts"]
  assert all(f["exposures"] in synthetic.EXPOSURE_BUCKETS for f in world["facts"])
  assert world["facts"] == synthetic.make_world(0, 40, 10, 8).facts()
  from warcio.archiveiterator import ArchiveIterator
  with open(tmp_path / "a" / "crawl-0000.warc.gz", "rb") as f:
    urls = [r.rec_headers.get_header("WARC-Target-URI") for r in ArchiveIterator(f) if r.rec_type == "response"]
  assert urls and all(u in labels for u in urls)


def test_blocklisted_domains_are_in_the_shipped_blocklist():
  import tarfile
  from datatrove.utils._import_utils import ASSETS_PATH
  with tarfile.open(os.path.join(ASSETS_PATH, "url_filterblacklistsv0_3_0.tar.gz")) as tar:
    member = next(m for m in tar.getmembers() if m.name.endswith("domains"))
    domains = set(tar.extractfile(member).read().decode().split("\n"))
  for d in synthetic.BLOCKLISTED_DOMAINS:
    assert d in domains, d


def test_default_corpus_includes_world_and_is_fast():
  import time
  start = time.perf_counter()
  clean = list(synthetic.clean_documents())
  assert time.perf_counter() - start < 5  # the world adds little to the embedded corpus's start-up
  assert 250_000 < sum(map(len, clean)) < 450_000  # small enough to be seen many times in a CPU run
  docs = list(corpus.default_documents())
  person = synthetic.make_world(0).people[0]
  assert any(person["name"] in d and str(person["birth_year"]) in d for d in docs)
  assert any("pydoc" in d or "Python" in d for d in docs)
  assert not any("@" in d for d in clean)  # contact details are not part of the clean text
