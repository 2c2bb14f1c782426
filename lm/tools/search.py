"""The search tool: BM25 (the `bm25s` library) over a local document collection, top k with snippets.

  search = Search.from_world(seed=0)                       # the synthetic world's clean pages
  search = Search.from_folder("runs/data/clean/jsonl", k=3, snippet_chars=300, cache_dir="runs/cache")
  print(search("Greta Daskby birth year"))
  [1] Greta Daskby (https://wiki.example.org/people/greta-daskby)
  According to the parish register, Greta Daskby was born in 1930. Friends say that her ...

`from_folder` reads every .jsonl, .jsonl.gz and .parquet file under a folder
(what `experiments/prepare_data.py` writes to <workdir>/clean/{jsonl,parquet}):
one record per document, its text under `text_key`; the url is the record's
"url" or datatrove's "metadata.url" (else its "id", else file:line), the
title its "title" or the text's first line. A missing or empty folder, a bad
line or a record without text is a UserError naming the file and line.

Ranking is BM25 (Lucene variant, English stop words, no stemming: PyStemmer
is not a dependency) with ties broken by document order, so results are
deterministic. The snippet (`snippet=`) is either "passage": the text from the
first sentence with the most distinct query words on; or "sentences", a
query-biased summary: the sentences whose query words weigh most (summed BM25
inverse document frequencies, so the asked name outweighs "year"), nearest the
heaviest on a tie, until `snippet_chars` is spent, shown in page order with
"..." where text is left out (a fact stated in a later sentence is shown even
when earlier ones name the entity too). `cache_dir` keeps the index (bm25s'
own save format) keyed by the files' names, sizes and times, so a second start
skips tokenizing the corpus.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from typing import Iterator, NamedTuple, Optional, Sequence

import bm25s
import numpy as np

from lm.data import corpus
from lm.errors import MissingFile, UserError

logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs one INFO line per index it builds

SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
MAX_QUERY_CHARS = 1000  # a runaway generation must not cost a tokenizer pass over megabytes
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+|\n+")
_WORD = re.compile(r"(?u)\b\w\w+\b")  # bm25s' default token pattern, so snippet words match query tokens
SNIPPETS = ("passage", "sentences")


class Document(NamedTuple):
  title: str
  url: str
  text: str


def _tokens(texts: Sequence[str]) -> list[list[str]]:
  return bm25s.tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)


class Search:
  name = "search"

  def __init__(self, documents: Sequence[Document], k: int = 3, snippet_chars: int = 300,
               retriever: Optional[bm25s.BM25] = None, snippet: str = "passage"):
    """Indexes `documents` (or uses `retriever`, an index already built over them, in order)."""
    if not documents:
      raise UserError("search: no documents to index; give a folder with JSONL or Parquet records")
    if k < 1 or snippet_chars < 20:
      raise UserError(f"search: k={k} and snippet_chars={snippet_chars} must be at least 1 and 20")
    if snippet not in SNIPPETS:
      raise UserError(f"search: snippet={snippet!r}; use one of {', '.join(SNIPPETS)}")
    self.snippet_mode = snippet
    self.documents = list(documents)
    self.k = k
    self.snippet_chars = snippet_chars
    if retriever is None:
      retriever = bm25s.BM25()
      retriever.index(_tokens([f"{d.title}\n{d.text}" for d in self.documents]), show_progress=False)
    self.retriever = retriever

  @classmethod
  def from_world(cls, seed: int = 0, **options) -> "Search":
    """The good pages of the synthetic world of `seed` (what a perfect web pipeline keeps)."""
    from lm.prep import synthetic
    pages = synthetic.make_pages(synthetic.make_world(seed), seed)
    return cls([Document(p.title, p.url, p.text) for p in pages if p.kind in synthetic.KEEP_KINDS], **options)

  @classmethod
  def from_folder(cls, folder: str, text_key: str = "text", cache_dir: Optional[str] = None,
                  **options) -> "Search":
    """Every JSONL/Parquet record under `folder`; `cache_dir` saves and reuses the index."""
    files = _files(folder)
    if cache_dir is None:
      return cls(list(_read(files, text_key)), **options)
    stamp = [(os.path.relpath(p, folder), os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in files]
    key = hashlib.sha256(json.dumps([bm25s.__version__, text_key, stamp]).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir, f"bm25-{key}")
    if os.path.exists(os.path.join(path, "documents.jsonl")):
      with open(os.path.join(path, "documents.jsonl"), encoding="utf-8") as f:
        documents = [Document(*json.loads(line)) for line in f]
      retriever = bm25s.BM25.load(path, show_progress=False)
      return cls(documents, retriever=retriever, **options)
    search = cls(list(_read(files, text_key)), **options)
    search._save(path)
    return search

  def _save(self, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    work = tempfile.mkdtemp(prefix=".bm25-", dir=os.path.dirname(path) or ".")
    self.retriever.save(work, show_progress=False)
    with open(os.path.join(work, "documents.jsonl"), "w", encoding="utf-8") as f:
      for d in self.documents:
        f.write(json.dumps(list(d), ensure_ascii=False) + "\n")
    try:
      os.rename(work, path)  # whole or not at all; a concurrent start may have saved it first
    except OSError:
      shutil.rmtree(work, ignore_errors=True)

  def __call__(self, arguments: str) -> str:
    try:
      if not isinstance(arguments, str) or not arguments.strip():
        return "Error: empty query; write a few keywords, e.g. Greta Daskby birth year"
      hits = self.search(arguments)
      if not hits:
        return f"No results for {arguments.strip()!r}."
      return "\n\n".join(self.hit(i, d, arguments) for i, (d, _) in enumerate(hits, 1))
    except Exception as e:  # a bug must still come back as text, never into the sampling loop
      return f"Error: search failed ({type(e).__name__}: {e})"

  def hit(self, rank: int, document: Document, query: str, insert: Optional[str] = None) -> str:
    """How the tool prints one result: "[rank] title (url)", then the snippet `query` picks (with
    `insert` after its first sentence: see `snippet`)."""
    return f"[{rank}] {document.title} ({document.url})\n{self.snippet(document, query, insert)}"

  def search(self, query: str, k: Optional[int] = None) -> list[tuple[Document, float]]:
    """The top `k` documents with a positive score, best first; equal scores in document order."""
    tokens = _tokens([query[:MAX_QUERY_CHARS]])[0]
    tokens = [t for t in tokens if t in self.retriever.vocab_dict]
    if not tokens:
      return []
    scores = np.asarray(self.retriever.get_scores(tokens), np.float64)
    order = np.lexsort((np.arange(len(scores)), -scores))
    return [(self.documents[i], float(scores[i])) for i in order[:k or self.k] if scores[i] > 0]

  def snippet(self, document: Document, query: str, insert: Optional[str] = None) -> str:
    """About `snippet_chars` of the text chosen by the query (the `snippet` mode: see the module's doc).

    `insert` (a planted instruction, lm/injection.py) is text the page carries right after the best
    sentence: it is shown there, and the snippet grows by its length so the rest is cut as before."""
    words = set(_tokens([query[:MAX_QUERY_CHARS]])[0])
    text = document.text.strip()
    spans = []  # (start, end) of each sentence
    for start in [0] + [m.end() for m in _SENTENCE_END.finditer(text)]:
      end = _SENTENCE_END.search(text, start)
      spans.append((start, end.start() if end else len(text)))
    found = [words.intersection(_WORD.findall(text[a:b].lower())) for a, b in spans]
    if self.snippet_mode == "sentences":  # the query words a sentence holds, weighed by their rarity
      idf = {w: self._idf(w) for w in words}
      weight = [sum(idf[w] for w in f) for f in found]
    else:  # how many distinct query words it holds
      weight = [len(f) for f in found]
    best = max(range(len(spans)), key=lambda i: (weight[i], -i))  # the first of the heaviest
    if self.snippet_mode == "sentences":
      return self._sentences(text, spans, weight, best, insert)
    start = spans[best][0] if weight[best] else 0
    piece, limit = text[start:], self.snippet_chars
    if insert:
      end = _SENTENCE_END.search(piece)
      at = end.start() if end else len(piece)
      piece = f"{piece[:at]} {insert.strip()}{piece[at:]}"
      limit += len(insert.strip()) + 1
    return ("... " if start > 0 else "") + _cut(piece, limit)

  def _idf(self, word: str) -> float:
    """BM25's inverse document frequency of `word` in the index (0 for a word it does not have)."""
    i = self.retriever.vocab_dict.get(word)
    if i is None:
      return 0.0
    indptr, n = self.retriever.scores["indptr"], self.retriever.scores["num_docs"]
    df = int(indptr[i + 1] - indptr[i])
    return float(np.log(1 + (n - df + 0.5) / (df + 0.5)))

  def _sentences(self, text: str, spans: list[tuple[int, int]], weight: list[float], best: int,
                 insert: Optional[str]) -> str:
    """The heaviest sentences, nearest the best one on a tie (a question's answer follows it), while
    `snippet_chars` lasts; shown in page order, "..." marking what is left out."""
    order = sorted(range(len(spans)), key=lambda i: (-weight[i], abs(i - best), i < best))
    chosen, used = [], 0
    for i in order:
      size = spans[i][1] - spans[i][0] + 1
      if chosen and (weight[i] == 0 or used + size > self.snippet_chars):
        break
      chosen.append(i)
      used += size
    parts, previous = [], -1
    for i in sorted(chosen):
      sentence = text[spans[i][0]:spans[i][1]].strip()
      if i == best and insert:
        sentence = f"{sentence} {insert.strip()}"
      parts.append(("... " if i > previous + 1 else "") + sentence)  # "..." where sentences are left out
      previous = i
    piece = " ".join(parts)
    limit = (self.snippet_chars + (len(insert.strip()) + 1 if insert else 0)
             + len(piece) - len(" ".join(p.removeprefix("... ") for p in parts)))  # the marks are free
    return _cut(piece if len(piece) > limit or previous == len(spans) - 1 else piece + " ...", limit)


def _cut(piece: str, limit: int) -> str:
  """`piece` as one paragraph, cut at a word boundary near `limit` characters ("..." marks the cut)."""
  if len(piece) > limit:
    cut = piece.rfind(" ", 0, limit)
    piece = piece[:cut if cut > limit // 2 else limit].rstrip() + " ..."
  return " ".join(piece.split())  # one paragraph: newlines in a tool output only cost tokens


def _files(folder: str) -> list[str]:
  if not os.path.isdir(folder):
    raise MissingFile(f"search: no such folder {folder!r}; point it at <data workdir>/clean/jsonl "
                      f"(experiments/prepare_data.py writes it)")
  files = sorted(p for p in glob.glob(os.path.join(folder, "**", "*"), recursive=True) if p.endswith(SUFFIXES))
  if not files:
    raise MissingFile(f"search: folder {folder!r} has no {'/'.join(SUFFIXES)} files; point it at "
                      f"<data workdir>/clean/jsonl")
  return files


def _read(files: Sequence[str], text_key: str) -> Iterator[Document]:
  n = 0
  for path in files:
    records = _parquet(path) if path.endswith(".parquet") else _jsonl(path)
    for where, record in records:
      if not isinstance(record, dict) or not isinstance(record.get(text_key), str):
        what = f"no {text_key!r} string" if isinstance(record, dict) else f"a {type(record).__name__}, not an object"
        raise UserError(f"{where}: {what}; every record needs its text under {text_key!r} (or pass text_key=)")
      if record[text_key].strip():
        n += 1
        yield _document(record, text_key, where)
  if n == 0:
    raise UserError(f"search: {', '.join(files[:3])}{' ...' if len(files) > 3 else ''}: no documents "
                    f"(every record's {text_key!r} is empty)")


def _document(record: dict, text_key: str, where: str) -> Document:
  meta = record.get("metadata") if isinstance(record.get("metadata"), dict) else {}
  text = record[text_key].strip()
  url = record.get("url") or meta.get("url") or record.get("id") or where
  title = record.get("title") or meta.get("title") or text.split("\n", 1)[0][:80]
  return Document(str(title), str(url), text)


def _jsonl(path: str) -> Iterator[tuple[str, object]]:
  for lineno, row in corpus.jsonl_rows(path):
    yield f"{path}:{lineno}", row


def _parquet(path: str) -> Iterator[tuple[str, object]]:
  import pyarrow as pa
  import pyarrow.parquet as pq
  try:
    rows = pq.read_table(path).to_pylist()
  except (pa.ArrowException, OSError) as e:
    raise UserError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0] if str(e) else e}); "
                    f"expected datatrove's clean/parquet output") from None
  for i, row in enumerate(rows):
    yield f"{path}: row {i}", row
