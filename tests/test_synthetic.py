"""The synthetic world: deterministic, labelled, facts consistent with the pages."""
import json
import os

from lm.data import corpus
from lm.prep import synthetic


def test_world_is_deterministic_and_consistent():
  a, b = synthetic.make_world(3), synthetic.make_world(3)
  assert a.people == b.people and a.cities == b.cities
  assert synthetic.make_world(4).people != a.people
  cities = {c["name"] for c in a.cities}
  companies = {c["name"] for c in a.companies}
  assert len({p["name"] for p in a.people}) == len(a.people)
  for p in a.people:
    assert p["city"] in cities and p["employer"] in companies and 1930 <= p["birth_year"] <= 2000
  facts = a.facts()
  assert {"entity": a.people[0]["name"], "type": "person", "attribute": "birth_year",
          "value": a.people[0]["birth_year"]} in facts


def test_pages_state_the_facts():
  world = synthetic.make_world(0, n_people=40, n_cities=10, n_companies=8)
  pages = {p.url: p for p in synthetic.make_pages(world, 0)}
  for person in world.people:
    page = pages[f"https://wiki.example.org/people/{synthetic._slug(person['name'])}"]
    for value in (person["name"], str(person["birth_year"]), person["city"], person["profession"], person["employer"]):
      assert value in page.text, (value, page.text)
  for city in world.cities:
    page = pages[f"https://wiki.example.org/places/{synthetic._slug(city['name'])}"]
    assert city["country"] in page.text and f"{city['population']:,}" in page.text


def test_crawl_files_and_labels(tmp_path):
  s1 = synthetic.write_crawl(str(tmp_path / "a"), seed=0, n_files=2, n_people=40, n_cities=10, n_companies=8)
  s2 = synthetic.write_crawl(str(tmp_path / "b"), seed=0, n_files=2, n_people=40, n_cities=10, n_companies=8)
  assert s1 == s2
  for name in ("crawl-0000.warc.gz", "crawl-0001.warc.gz", "labels.jsonl", "world.json"):
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
  labels = synthetic.read_labels(str(tmp_path / "a"))
  assert len(labels) == s1["pages"]
  kinds = {r["kind"] for r in labels.values()}
  assert kinds >= {"person", "city", "company", "arithmetic", "spelling", "boilerplate", "blocklisted",
                   "non_english", "low_quality", "exact_duplicate", "near_duplicate", "non_html"}
  for r in labels.values():
    assert r["expect"] == ("keep" if r["kind"] in synthetic.KEEP_KINDS else "drop")
    if r["kind"] in ("exact_duplicate", "near_duplicate"):
      assert labels[r["dup_of"]]["kind"] in ("person", "city")
    if r["kind"] == "company":
      assert len(r["pii"]) == 4
  world = json.loads((tmp_path / "a" / "world.json").read_text())
  assert len(world["people"]) == 40 and world["facts"]
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
  docs = list(corpus.default_documents())
  person = synthetic.make_world(0).people[0]
  assert any(person["name"] in d and str(person["birth_year"]) in d for d in docs)
  assert any("pydoc" in d or "Python" in d for d in docs)
  assert not any("@" in d for d in clean)  # contact details are not part of the clean text
