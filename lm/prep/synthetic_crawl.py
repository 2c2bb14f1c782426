"""The crawl around the synthetic world's good pages: junk, PII, WARC files (`lm/prep/synthetic.py`).

  Page                     one response of the crawl with its hidden label
  contact_paragraph(...)   a company's contact details: e-mails and public IPs (PII)
  junk_pages(...)          what a pipeline must drop: navigation-only pages,
                           blocklisted domains, other languages, spam, exact and
                           near duplicates, non-HTML responses
  write_warcs(...)         the pages as gzipped WARC files, same seed, same bytes
"""
from __future__ import annotations

import dataclasses
import io
import ipaddress
import os
import random
import uuid

from lm.prep import synthetic_facts as F
from lm.prep import synthetic_pages as P
from lm.prep import synthetic_text as T

# Domains from datatrove's shipped URL blocklist (checked in tests/test_synthetic.py).
BLOCKLISTED_DOMAINS = ("airtellotterywinners.com", "amazononlinewinner.com", "attorneywinner.com",
                       "baronloan.org", "approvedcasinos.com", "applecasinos.com",
                       "allcasinoreviews.com", "takebinance.com")


@dataclasses.dataclass(frozen=True)
class Page:
  url: str
  html: str
  kind: str                # person | profile | city | guide | company | listing | quick_facts | arithmetic
                           # | spelling | boilerplate | blocklisted | non_english | low_quality
                           # | exact_duplicate | near_duplicate | non_html
  text: str = ""           # the page's main content as plain text ("" for junk)
  title: str = ""
  expect: str = "keep"     # keep | drop: what a good pipeline does with it
  lang: str = "en"
  dup_of: str = ""         # url of the page this one copies
  pii: tuple = ()          # strings that must not survive in kept text
  content_type: str = "text/html; charset=utf-8"


def _public_ip(rng: random.Random) -> str:
  """A globally routable IPv4 address (private, loopback and reserved ranges are not PII)."""
  while True:
    ip = ".".join(str(rng.randrange(1, 255)) for _ in range(4))
    if ipaddress.ip_address(ip).is_global:
      return ip


def contact_paragraph(rng: random.Random, company: str, person: str) -> tuple[str, tuple]:
  """(contact paragraph, the PII strings in it)."""
  slug = company.lower().replace(" ", "")
  pii = dict(email=f"press@{slug}.example-mail.net",
             email2=f"{person.lower().replace(' ', '.')}@{slug}.example-mail.net",
             ip=_public_ip(rng), ip2=_public_ip(rng),
             private_ip=f"192.168.{rng.randrange(0, 255)}.{rng.randrange(1, 255)}")
  contact = " ".join(s.format(**pii) for s in T.COMPANY_CONTACT)
  return contact, (pii["email"], pii["email2"], pii["ip"], pii["ip2"])


def _foreign_text(lang: str, person: dict) -> str:
  sents = [s.format(**person) for s in T.FOREIGN[lang]]
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


def junk_pages(world, outsiders: list[dict], originals: list[Page], seed: int, rng: random.Random) -> list[Page]:
  """Pages a good pipeline drops; biographies here are of `outsiders`, copies are of `originals`."""
  n = len(world.people)
  n_blocklisted = max(n // 10, 8)
  junk: list[Page] = []
  for i in range(max(n // 10, 6)):
    junk.append(Page(f"https://portal{i}.example.net/index.html", P.html("Welcome", "", rng), "boilerplate",
                     expect="drop"))
  for i, p in enumerate(outsiders[:n_blocklisted]):
    text = P.person_text(random.Random(seed * 7919 + i), p, P.Deck(F.PERSON_EXTRA, random.Random(i)))
    junk.append(Page(f"https://{BLOCKLISTED_DOMAINS[i % len(BLOCKLISTED_DOMAINS)]}/profile/{i}",
                     P.html(p["name"], text, rng), "blocklisted", expect="drop"))
  langs = sorted(T.FOREIGN)
  for i, p in enumerate(outsiders[n_blocklisted:]):
    lang = langs[i % len(langs)]
    junk.append(Page(f"https://{lang}.wiki.example.org/page/{i}", P.html("Biographie", _foreign_text(lang, p), rng, lang),
                     "non_english", expect="drop", lang=lang))
  for i in range(max(n // 6, 12)):
    junk.append(Page(f"https://deals{i}.example.biz/offer", P.html("Best offers", _low_quality_text(rng, i), rng),
                     "low_quality", expect="drop"))
  n_exact, n_near = max(n // 10, 6), max(n // 6, 10)
  copied = rng.sample(originals, min(n_exact + n_near, len(originals)))
  for i, orig in enumerate(copied[:n_exact]):
    junk.append(Page(f"https://mirror.example.info/copy/{i}", orig.html, "exact_duplicate", expect="drop",
                     dup_of=orig.url))
  for i, orig in enumerate(copied[n_exact:]):
    text = orig.text.replace(". ", ", and ", 1) + "\n\nThis article was copied from an encyclopedia."
    junk.append(Page(f"https://scraper{i}.example.info/{P.slug(orig.title)}", P.html(orig.title, text, rng),
                     "near_duplicate", expect="drop", dup_of=orig.url))
  for i in range(4):
    junk.append(Page(f"https://wiki.example.org/robots-{i}.txt", "User-agent: *\nDisallow: /private/\n",
                     "non_html", expect="drop", content_type="text/plain"))
  return junk


def _warc_record(writer, rng: random.Random, page: Page, date: str) -> None:
  from warcio.statusandheaders import StatusAndHeaders
  body = page.html.encode("utf-8")
  http = StatusAndHeaders("200 OK", [("Content-Type", page.content_type), ("Content-Length", str(len(body)))],
                          protocol="HTTP/1.1")
  rec_id = f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}>"
  record = writer.create_warc_record(page.url, "response", payload=io.BytesIO(body), http_headers=http,
                                     warc_headers_dict={"WARC-Record-ID": rec_id, "WARC-Date": date})
  writer.write_record(record)


def write_warcs(out_dir: str, pages: list[Page], n_files: int, rng: random.Random) -> None:
  from warcio.warcwriter import WARCWriter
  # Contiguous slices keep every original in a file at or before its copies.
  per_file = -(-len(pages) // n_files)
  for f in range(n_files):
    # Gzip per record, as Common Crawl does (zlib's gzip header has no timestamp: same seed, same bytes).
    with open(os.path.join(out_dir, f"crawl-{f:04d}.warc.gz"), "wb") as fh:
      writer = WARCWriter(fh, gzip=True)
      for k, page in enumerate(pages[f * per_file:(f + 1) * per_file]):
        _warc_record(writer, rng, page, f"2024-01-{1 + f % 28:02d}T00:{k // 60 % 60:02d}:{k % 60:02d}Z")
