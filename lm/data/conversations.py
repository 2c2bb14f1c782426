"""Conversation datasets: files in common chat formats → lists of messages (`lm/conversation.py`).

Every reader yields validated training conversations and names `file:line`
in the error for a malformed record. Kinds, chosen by `source(kind, path)`:

  messages  JSONL (or .jsonl.gz), one `{"messages": [...]}` per line, in this
            project's message format (roles system/user/assistant/tool,
            assistant `tool_call`s).
  sharegpt  a JSON array `[{"id", "conversations": [{"from", "value"}]}]`;
            from human/user, gpt/assistant, system. A trailing unanswered
            human turn is dropped (common in truncated dumps).
  oasst     OpenAssistant message trees, one per line (.jsonl or .jsonl.gz):
            `{"message_tree_id", "prompt": {"role", "text", "rank", "deleted",
            "review_result", "replies": [...]}}`. Deleted and review-rejected
            messages are skipped. At an assistant turn the best-ranked reply is
            followed (lowest "rank"; unranked replies after ranked ones, in
            file order). At a prompter turn the first reply in file order that
            has an assistant answer is followed; when none has, the
            conversation ends. One conversation per tree; trees with no usable
            answer yield nothing.
  gsm8k     GSM8K JSONL `{"question", "answer"}`. Each calculator annotation
            `<<expr=result>>` becomes an assistant python tool call on `expr`
            followed by a tool message holding `result` (the dataset's value,
            not a re-computation); the text after it continues the turn, as in
            the original. The final line keeps GSM8K's "#### 72" convention,
            which the GSM8K reward parses.

`register_source(name, fn)` adds a kind (e.g. the synthetic world's tasks);
`mix` interleaves several sources by weight, deterministically.
"""
from __future__ import annotations

import gzip
import json
import re
from typing import Callable, Iterator, Sequence

import numpy as np

from lm import conversation
from lm.data import corpus
from lm.errors import UserError

Conversation = list  # of message dicts


def _open(path: str):
  return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def _jsonl(path: str, what: str) -> Iterator[tuple[int, dict]]:
  """(line number, object) for each non-blank line."""
  for lineno, row in corpus.jsonl_rows(path, f" {what}"):
    if not isinstance(row, dict):
      raise UserError(f"{path}:{lineno}: a {type(row).__name__}, expected a JSON object {what}")
    yield lineno, row


def _checked(messages: list, path: str, lineno: int) -> list:
  try:
    conversation.validate(messages)
  except UserError as e:
    raise UserError(f"{path}:{lineno}: {e}") from None
  return messages


def messages_jsonl(path: str) -> Iterator[Conversation]:
  for lineno, row in _jsonl(path, '{"messages": [...]}'):
    if not isinstance(row.get("messages"), list):
      raise UserError(f'{path}:{lineno}: no "messages" list; each line must be {{"messages": [...]}}')
    yield _checked(row["messages"], path, lineno)


_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "bard": "assistant", "system": "system"}


def _json_array(path: str) -> Iterator[tuple[int, object]]:
  """(line number, element) of a top-level JSON array, so errors can point into the file."""
  with _open(path) as f:
    text = f.read()
  dec = json.JSONDecoder()
  ws = re.compile(r"\s*")
  pos = ws.match(text, 0).end()
  if not text.startswith("[", pos):
    raise UserError(f"{path}:{text.count(chr(10), 0, pos) + 1}: expected a JSON array of conversations")
  pos = ws.match(text, pos + 1).end()
  while not text.startswith("]", pos):
    try:
      item, end = dec.raw_decode(text, pos)
    except json.JSONDecodeError as e:
      raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
    yield text.count("\n", 0, pos) + 1, item
    pos = ws.match(text, end).end()
    if text.startswith(",", pos):
      pos = ws.match(text, pos + 1).end()
    elif not text.startswith("]", pos):
      raise UserError(f"{path}:{text.count(chr(10), 0, pos) + 1}: expected ',' or ']' between conversations")


def sharegpt(path: str) -> Iterator[Conversation]:
  for lineno, item in _json_array(path):
    turns = item.get("conversations") if isinstance(item, dict) else None
    if not isinstance(turns, list):
      raise UserError(f'{path}:{lineno}: conversation has no "conversations" list '
                       f'(expected {{"id", "conversations": [{{"from", "value"}}]}})')
    messages = []
    for turn in turns:
      who = turn.get("from") if isinstance(turn, dict) else None
      if who not in _SHAREGPT_ROLES:
        raise UserError(f"{path}:{lineno}: unknown speaker {who!r} in conversation "
                         f"{item.get('id')!r}; expected one of {sorted(_SHAREGPT_ROLES)}")
      messages.append({"role": _SHAREGPT_ROLES[who], "content": turn.get("value")})
    while messages and messages[-1]["role"] == "user":
      messages.pop()
    yield _checked(messages, path, lineno)


def _usable(m: dict) -> bool:
  return not m.get("deleted") and m.get("review_result") is not False


def _best_assistant(replies: list) -> dict | None:
  ok = [r for r in replies if r.get("role") == "assistant" and _usable(r)]
  ranked = sorted((r for r in ok if r.get("rank") is not None), key=lambda r: r["rank"])
  return (ranked + [r for r in ok if r.get("rank") is None] or [None])[0]


def oasst(path: str, lang: str | None = None) -> Iterator[Conversation]:
  """One conversation per tree (see module docstring for which branch); `lang` filters trees."""
  for lineno, row in _jsonl(path, '{"message_tree_id", "prompt": {...}}'):
    node = row.get("prompt")
    if not isinstance(node, dict) or "role" not in node or "text" not in node:
      raise UserError(f'{path}:{lineno}: no "prompt" message with "role" and "text" '
                       f'(expected an OpenAssistant message tree per line)')
    if node["role"] != "prompter":
      raise UserError(f"{path}:{lineno}: tree starts with a {node['role']!r} message, expected 'prompter'")
    if (lang and node.get("lang") != lang) or not _usable(node):
      continue
    messages = []
    while node is not None:
      messages.append({"role": "user", "content": node["text"]})
      answer = _best_assistant(node.get("replies") or [])
      if answer is None:
        messages.pop()
        break
      messages.append({"role": "assistant", "content": answer["text"]})
      node = next((r for r in answer.get("replies") or []
                   if r.get("role") == "prompter" and _usable(r)
                   and _best_assistant(r.get("replies") or []) is not None), None)
    if messages:
      yield _checked(messages, path, lineno)


CALCULATOR = re.compile(r"<<([^<>]*)>>")  # GSM8K's calculator annotations, "<<48/2=24>>"


def gsm8k_messages(question: str, answer: str) -> Conversation:
  """One GSM8K problem → user question + assistant turn with a python call per annotation."""
  messages: list[dict] = [{"role": "user", "content": question}]
  pos = 0
  for m in CALCULATOR.finditer(answer):
    expr, sep, result = m.group(1).rpartition("=")
    if not sep:
      raise UserError(f"calculator annotation <<{m.group(1)}>> has no '=result'")
    messages.append({"role": "assistant", "content": answer[pos:m.start()],
                     "tool_call": {"name": "python", "arguments": expr}})
    messages.append({"role": "tool", "content": result})
    pos = m.end()
  messages.append({"role": "assistant", "content": answer[pos:]})
  return messages


def gsm8k_rows(path: str) -> Iterator[tuple[int, str, str]]:
  """(line number, question, answer) of a GSM8K JSONL file, each answer with its "#### " line;
  shared by the conversation source here and the GSM8K task (lm/tasks/gsm8k.py)."""
  for lineno, row in _jsonl(path, '{"question", "answer"}'):
    q, a = row.get("question"), row.get("answer")
    if not isinstance(q, str) or not isinstance(a, str):
      raise UserError(f'{path}:{lineno}: needs string "question" and "answer" fields')
    if "####" not in a:
      raise UserError(f'{path}:{lineno}: answer has no "#### <final answer>" line')
    yield lineno, q, a


def gsm8k(path: str) -> Iterator[Conversation]:
  for lineno, q, a in gsm8k_rows(path):
    try:
      messages = gsm8k_messages(q, a)
    except UserError as e:
      raise UserError(f"{path}:{lineno}: {e}") from None
    yield _checked(messages, path, lineno)


_SOURCES: dict[str, Callable[..., Iterator[Conversation]]] = {
    "messages": messages_jsonl, "sharegpt": sharegpt, "oasst": oasst, "gsm8k": gsm8k,
}


def register_source(name: str, fn: Callable[..., Iterator[Conversation]]) -> None:
  """Adds a kind: `fn(path, **kwargs)` yields conversations."""
  if name in _SOURCES and _SOURCES[name] is not fn:
    raise UserError(f"conversation source {name!r} is already registered")
  _SOURCES[name] = fn


def kinds() -> list[str]:
  """The registered source kinds."""
  return sorted(_SOURCES)


def source(kind: str, path: str, **kwargs) -> Iterator[Conversation]:
  if kind not in _SOURCES:
    raise UserError(f"unknown conversation source kind {kind!r}; known: {', '.join(sorted(_SOURCES))}")
  return _SOURCES[kind](path, **kwargs)


def mix(sources_with_weights: Sequence[tuple[Sequence[Conversation], float]],
        seed: int) -> list[Conversation]:
  """Weighted, evenly spread interleaving of several conversation lists.

  A weight is how many times each conversation of its source appears: 2 means
  twice, 0.5 a seeded half. The copies of a source are in seeded random order
  and spread evenly over the output, so every stretch of it has the sources in
  proportion; the same seed always gives the same list.
  """
  rng = np.random.default_rng(seed)
  keyed = []
  for s, (convs, weight) in enumerate(sources_with_weights):
    if weight < 0:
      raise UserError(f"mix: source {s} has negative weight {weight}")
    n = len(convs)
    count = int(round(weight * n))
    if not count:
      continue
    order = np.concatenate([rng.permutation(n) for _ in range(-(-count // n))])[:count]
    offset = rng.random()
    keyed += [((k + offset) / count, s, int(i)) for k, i in enumerate(order)]
  keyed.sort()
  return [sources_with_weights[s][0][i] for _, s, i in keyed]
