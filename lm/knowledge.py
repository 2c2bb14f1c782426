"""Knowledge in the weights versus in the context window, on the synthetic world's held-out facts.

  outputs = knowledge.oracle_outputs(examples, documents)     # the page that states each fact, as a search output
  prompts = knowledge.context_prompts(examples, outputs, tok)  # ... forced in after the ideal search call
  lines, summary = knowledge.table([{mode: eval rows} per seed])  # mode: weights | context | search

(experiments/knowledge.py answers with `lm.evaluation.run_tasks` in each mode.)

The same held-out questions (entities never in any SFT data), answered greedily
three ways:

  weights  the SFT model alone: a vague recollection of pretraining.
  context  the tool-use SFT model with the search call already made and its output
           forced in: the page of the crawl that states the fact, formatted exactly as
           the search tool formats a hit (`oracle_outputs`). Working memory, perfect
           retrieval. Facts the text never states have no page and are left out.
  search   the tool-use SFT model with the live BM25 tool (`lm.tools.search`): it writes
           its own query, and retrieval can miss.

Accuracy is grouped by how often the fact appeared in pretraining (`lm.evaluation`'s
buckets), so the table shows where context helps: rarely seen facts.
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Sequence

import numpy as np

from lm import chat_template, evaluation
from lm.tasks import tool_use
from lm.tools.search import Document, Search

MODES = ("weights", "context", "search")


_SENTENCES = re.compile(r"(?<=[.?!])\s+|\n+")


def stating_documents(example, documents: Sequence[Document]) -> list[Document]:
  """The documents with a sentence that names the entity and its value (where a reader learns the fact)."""
  name, value = example.meta["entity"], str(example.reference)
  pattern = re.compile(rf"(?<!\w){re.escape(value)}(?!\w)")
  return [d for d in documents if name in d.text and pattern.search(d.text)
          and any(name in s and pattern.search(s) for s in _SENTENCES.split(d.text))]


def oracle_pages(examples: Sequence, documents: Sequence[Document]) -> list[Document | None]:
  """For each example, the page that states its fact and that the ideal query ranks first among
  those pages (None when no page states it)."""
  out = []
  for ex in examples:
    pages = stating_documents(ex, documents)
    if not pages:
      out.append(None)
      continue
    if len(pages) == 1:  # nothing to rank
      out.append(pages[0])
      continue
    _, query = tool_use.call_for(ex)
    hits = Search(pages, k=1).search(query)
    out.append(hits[0][0] if hits else pages[0])
  return out


def oracle_query(example) -> str:
  """The query whose snippet starts at the sentence with the entity's name and the answer."""
  return f"{example.meta['entity']} {example.reference}"


def oracle_outputs(examples: Sequence, documents: Sequence[Document], inserts: Sequence[str | None] | None = None,
                   **search_options) -> list[str | None]:
  """For each example, what the search tool would print had it retrieved the page that states the
  fact (`oracle_pages`): its layout, with a snippet from the sentence with the entity's name and the
  answer; None when no page states it. `inserts[i]` is text planted after that sentence (lm/injection.py)."""
  pages = oracle_pages(examples, documents)
  found = list(dict.fromkeys(p for p in pages if p is not None))
  if not found:
    return [None] * len(examples)
  search = Search(found, **{"k": 1, "snippet_chars": 160, **search_options})  # the tool's layout and snippets
  return [None if page is None else search.hit(1, page, oracle_query(ex), inserts[i] if inserts else None)
          for i, (ex, page) in enumerate(zip(examples, pages))]


def context_prompts(examples: Sequence, outputs: Sequence[str], tok) -> list[list[int]]:
  """Prompts ending inside the assistant's turn, right after the (oracle) search output."""
  fmt = chat_template.OwnFormat(tok)
  prompts = []
  for ex, output in zip(examples, outputs):
    _, query = tool_use.call_for(ex)
    messages = ex.messages + [{"role": "assistant", "content": "", "tool_call": {"name": "search", "arguments": query}},
                              {"role": "tool", "content": output}]
    prompts.append(fmt.render_prompt(messages).tolist())
  return prompts


def table(per_seed: Sequence[dict[str, list[dict]]]) -> tuple[list[str], dict]:
  """Markdown rows (bucket × mode: mean ± std over seeds, n facts) from each seed's {mode: eval rows}."""
  acc: dict[tuple[str, str], list[float]] = defaultdict(list)
  n: dict[tuple[str, str], int] = {}
  for rows_by_mode in per_seed:
    for mode, rows in rows_by_mode.items():
      by = defaultdict(list)
      for r in rows:
        by[r["group"]].append(r["score"])
        by["all"].append(r["score"])
      for group, scores in by.items():
        acc[(group, mode)].append(float(np.mean(scores)))
        n[(group, mode)] = len(scores)
  groups = [g for _, _, g in evaluation.EXPOSURE_BUCKETS] + ["all"]
  lines = ["| seen in pretraining | " + " | ".join(MODES) + " |", "|---|" + "---|" * len(MODES)]
  summary = {}
  for g in groups:
    cells = []
    for mode in MODES:
      v = acc.get((g, mode))
      if not v:
        cells.append("—")
        continue
      summary[f"{mode}/{g}"] = {"mean": float(np.mean(v)), "std": float(np.std(v)), "seeds": v}
      cells.append(f"{np.mean(v):.3f} ± {np.std(v):.3f} (n={n[(g, mode)]})")
    if any(c != "—" for c in cells):
      lines.append(f"| {g} | " + " | ".join(cells) + " |")
  return lines, summary


TOOL_TASKS = (("multi-digit arithmetic", "eval/arithmetic/accuracy"),
              ("letter counting", "eval/spelling/count/accuracy"),
              ("spelling a word out", "eval/spelling/spell/accuracy"))


def tool_task_table(without: Sequence[dict], with_tools: Sequence[dict]) -> tuple[list[str], dict]:
  """Markdown rows (task: without tools, with tools, difference; mean ± std [per seed]) from each seed's
  final held-out metrics of the plain SFT and of the tool-use SFT."""
  def cell(v):
    return f"{np.mean(v):.3f} ± {np.std(v):.3f} [{', '.join(f'{x:.3f}' for x in v)}]"
  lines = ["| held-out task | without tools | with tools | with − without |", "|---|---|---|---|"]
  summary = {}
  for label, key in TOOL_TASKS:
    a = [m[key] for m in without if key in m]
    b = [m[key] for m in with_tools if key in m]
    if len(a) != len(without) or len(b) != len(with_tools) or not a:
      continue
    summary[key] = {"without": a, "with": b}
    lines.append(f"| {label} | {cell(a)} | {cell(b)} | {np.mean(b) - np.mean(a):+.3f} |")
  return lines, summary
