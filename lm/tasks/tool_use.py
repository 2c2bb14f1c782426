"""Task conversations whose ideal answer calls a tool, in the exact format the rollout engine runs.

  conv = tool_use.conversation(example, search)     # search(query) -> the search tool's output

Which tool each task uses, and why (the model sees tokens, not characters, and
has a fixed amount of compute per token; its recollection of a rarely seen fact
is vague, while text in its context is working memory):

  arithmetic   python  "347*28"                       the calculator answers exactly
  spelling     python  'print("strawberry".count("r"))' or 'print("-".join("banana"))'
  world        search  "Xenia Cormnel birth year"     BM25 over the crawl's pages

The tool's output in the conversation is what the tool really prints, so SFT
shows the model the outputs it will see at inference, and the reply after it
reads the answer off that output. Search runs for real (BM25 is in-process and
fast); the Python calls' outputs are computed here (`python_output`) instead of
starting thousands of sandboxed interpreters, and a test checks that the
sandbox prints exactly the same for them.
"""
from __future__ import annotations

import random
import re
from typing import Callable

from lm.prep import synthetic
from lm.tasks.base import Example, take_cycled
from lm.tasks.world import ASKED, WorldTask

NOT_FOUND = "The search did not find it, so I don't know."  # lm.evaluation.is_refusal counts it as a refusal

Search = Callable[[str], str]

# How the model phrases a search for each asked attribute.
SEARCH_WORDS = {"birth_year": "birth year", "city": "hometown city", "profession": "profession",
                "employer": "employer company", "country": "country", "industry": "industry",
                "founded": "founded year"}


def call_for(example: Example) -> tuple[str, str] | None:
  """(tool name, arguments) of the ideal call for this example, or None when its task has no tool."""
  m = example.meta
  if example.task == "arithmetic":
    return "python", f"{m['a']}{'+' if m['op'] == 'add' else '*'}{m['b']}"
  if example.task == "spelling":
    if m["kind"] == "count":
      return "python", f'print("{m["word"]}".count("{m["letter"]}"))'
    return "python", f'print("-".join("{m["word"]}"))'
  if example.task == "world":
    return "search", f"{m['entity']} {SEARCH_WORDS[m['attribute']]}"
  return None


def reply_after(example: Example, output: str) -> str:
  """The assistant's words after the tool answered: read off the output, ending as the reward expects."""
  m, out = example.meta, output.strip()
  if example.task == "arithmetic":
    sym = "+" if m["op"] == "add" else "*"
    return f"{m['a']} {sym} {m['b']} = {out}.\nAnswer: {out}"
  if example.task == "spelling":
    if m["kind"] == "count":
      return f"The letter {m['letter']} appears {out} {'time' if out == '1' else 'times'} in {m['word']}.\nAnswer: {out}"
    return f"Answer: {out}"
  # world: the fact when the search output states it about the asked entity; otherwise the reply says
  # the search did not find it. Answering anyway would teach the model that the output does not matter
  # (a third of the ideal queries' top hits miss the fact) and to state facts it has no evidence for;
  # so would reading a value off a page about someone else that happens to be the same ("teacher").
  if (re.search(rf"(?<!\w){re.escape(str(example.reference))}(?!\w)", out)
      and m["entity"] in out):
    return example.target
  return NOT_FOUND


def python_output(example: Example) -> str:
  """What the sandbox (or the calculator, for arithmetic) prints for this example's ideal call."""
  m = example.meta
  if example.task == "arithmetic":
    return str(m["a"] + m["b"] if m["op"] == "add" else m["a"] * m["b"])
  if m["kind"] == "count":
    return str(m["word"].count(m["letter"]))
  return "-".join(m["word"])


def conversation(example: Example, search: Search | None = None) -> list[dict]:
  """The prompt, a tool call, its output, and the answer; the plain conversation when no tool applies
  (or, for a world fact, when no search tool is given)."""
  call = call_for(example)
  if call is None or (call[0] == "search" and search is None):
    return example.conversation()
  name, arguments = call
  output = search(arguments) if name == "search" else python_output(example)
  return example.messages + [
      {"role": "assistant", "content": "", "tool_call": {"name": name, "arguments": arguments}},
      {"role": "tool", "content": output},
      {"role": "assistant", "content": reply_after(example, output)},
  ]


def stand_in_conversations(task, search, people: int, n: int, seed: int) -> list[list[dict]]:
  """`n` tool-use conversations asking about the people of another synthetic world (`people` of them,
  none named like an entity of `task.world`), searched in a copy of `search` with that world's pages
  added. The world task's few training entities (50 in the default world) are names a small model
  memorises: asked about a held-out one, it writes a memorised name into its query ("Stefan Brandby"
  → "Cora Brandby birth year"). Hundreds of new names, each asked once or twice, teach it to copy the
  name it was given and read the answer off the page; a fifth of them have no page (never in any
  text), so "not found" stays an answer. The pages are in no index the model is evaluated with."""
  from lm.tools import search as search_lib  # bm25s: only for the callers that build an index

  other_seed = 1_000_003 + seed
  other = synthetic.make_world(other_seed, n_people=people)
  taken = {e["name"] for kind in ("person", "city", "company") for e in task.world.entities(kind)}
  pages = [search_lib.Document(p.title, p.url, p.text) for p in synthetic.make_pages(other, other_seed)
           if p.kind in synthetic.KEEP_KINDS and p.kind not in ("arithmetic", "spelling")]
  wider = search_lib.Search(list(search.documents) + pages, k=search.k, snippet_chars=search.snippet_chars,
                           snippet=search.snippet_mode)
  stand_in = WorldTask(other)
  rows = [r for r in other.facts()
          if r["type"] == "person" and r["attribute"] in ASKED["person"] and r["entity"] not in taken]
  rng = random.Random(f"tool_use/stand_in/{seed}")
  return [conversation(stand_in.example(row, rng, "train"), wider) for row in take_cycled(rows, n, rng)]
