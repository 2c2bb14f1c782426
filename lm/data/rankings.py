"""Preference data for the reward model: files of ranked responses → `Ranking`s.

A `Ranking` is one prompt (conversation messages ending with a user turn), k ≥ 2
assistant responses to it, and their dense ranks (0 is the best; equal ranks
are ties, which imply no preference). Every pair (i, j) with ranks[i] < ranks[j]
is one Bradley–Terry term, so a k-way ranking without ties gives k(k−1)/2 pairs.
Every reader names `file:line` in the error for a malformed record. Kinds, chosen
by `source(kind, path)`:

  ranked  JSONL (or .jsonl.gz), one ranking per line:
            {"prompt": "text" | [messages], "responses": ["...", ...], "ranking": [2, 0, 1]}
          `ranking` lists response *indices* from best to worst and must name each
          response once; an inner list is a tie: [2, [0, 1]] puts 2 first and 0, 1
          level after it. A string prompt is one user message; a list is messages in
          this project's format (lm/conversation.py) ending with a user message.
  hh      Anthropic HH-RLHF pairs, {"chosen", "rejected"}: two "\\n\\nHuman: ...
          \\n\\nAssistant: ..." transcripts. The prompt is their shared beginning up to
          its last "\\n\\nAssistant:" marker, the two remainders are the responses (chosen
          ranked first). Human → user, Assistant → assistant; consecutive turns of one
          speaker (a few transcripts repeat "Assistant:") are merged with a blank line;
          a "Human:" inside a line is text. A pair whose responses are identical, whose
          prompt does not end with a human turn or whose response holds a human turn is
          skipped (counted in `skipped`; none of the 2,312 shared test pairs is).
  oasst   OpenAssistant message trees, one per line (lm/data/conversations.py reads the
          same files as SFT conversations): every prompter message whose assistant
          replies carry human ranks ("rank", 0 best) gives one ranking of its ranked,
          usable replies (deleted and review-rejected ones are skipped, as in SFT);
          the prompt is the path of messages from the tree's root. Groups of 2-7.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import re
from typing import Callable, Iterator, Sequence

from lm import conversation
from lm.data import corpus
from lm.data.conversations import _usable  # the one rule for skipped OpenAssistant messages
from lm.errors import UserError


@dataclasses.dataclass(frozen=True)
class Ranking:
  prompt: tuple        # messages (dicts), ending with a user message
  responses: tuple     # assistant replies (str), k ≥ 2
  ranks: tuple         # dense ranks (int) per response: 0 best, equal values tie

  def pairs(self) -> list[tuple[int, int]]:
    """(better, worse) response indices: every pair the ranking orders."""
    return [(i, j) for i, ri in enumerate(self.ranks) for j, rj in enumerate(self.ranks) if ri < rj]

  def key(self) -> str:
    """A stable text of the prompt (the held-out split keeps a prompt's rankings together)."""
    return json.dumps(self.prompt, sort_keys=True, ensure_ascii=False)


def dense_ranks(order: Sequence, n: int) -> tuple[int, ...]:
  """A best-to-worst list of indices (inner lists tie) → each response's dense rank."""
  if not isinstance(order, list):
    raise UserError(f'"ranking" must be a list of response indices, best first (got {type(order).__name__})')
  ranks: dict[int, int] = {}
  for level, item in enumerate(order):
    for i in item if isinstance(item, list) else [item]:
      if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
        raise UserError(f'"ranking" entry {i!r} is not a response index 0..{n - 1}')
      if i in ranks:
        raise UserError(f'"ranking" names response {i} twice')
      ranks[i] = level
  if len(ranks) != n:
    raise UserError(f'"ranking" leaves responses {sorted(set(range(n)) - set(ranks))} unranked; '
                    f"name each of the {n} responses once")
  return tuple(ranks[i] for i in range(n))


def _make(prompt: list, responses: list, ranks: Sequence[int], where: str) -> Ranking:
  try:
    conversation.validate(prompt, prompt=True)
  except UserError as e:
    raise UserError(f"{where}: prompt: {e}") from None
  if prompt[-1]["role"] != "user":
    raise UserError(f"{where}: the prompt must end with a user message")
  levels = sorted(set(ranks))
  dense = tuple(levels.index(r) for r in ranks)
  return Ranking(tuple(prompt), tuple(responses), dense)


def _objects(path: str, what: str) -> Iterator[tuple[int, dict]]:
  for lineno, row in corpus.jsonl_rows(path, f" {what}"):
    if not isinstance(row, dict):
      raise UserError(f"{path}:{lineno}: a {type(row).__name__}, expected a JSON object {what}")
    yield lineno, row


def ranked_jsonl(path: str, skipped: collections.Counter | None = None) -> Iterator[Ranking]:
  for lineno, row in _objects(path, '{"prompt", "responses", "ranking"}'):
    where = f"{path}:{lineno}"
    prompt, responses = row.get("prompt"), row.get("responses")
    if isinstance(prompt, str):
      prompt = [{"role": "user", "content": prompt}]
    if not isinstance(prompt, list):
      raise UserError(f'{where}: "prompt" must be a string or a list of messages')
    if (not isinstance(responses, list) or len(responses) < 2
        or not all(isinstance(r, str) for r in responses)):
      raise UserError(f'{where}: "responses" must be a list of at least 2 strings')
    try:
      ranks = dense_ranks(row.get("ranking"), len(responses))
    except UserError as e:
      raise UserError(f"{where}: {e}") from None
    yield _make(prompt, responses, ranks, where)


_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def hh_messages(transcript: str) -> list[dict]:
  """'\\n\\nHuman: ...\\n\\nAssistant: ...' → messages; consecutive same-speaker turns merged."""
  parts = _TURN.split(transcript)
  if parts[0].strip():
    raise UserError(f'transcript starts with {parts[0][:30]!r}, not "\\n\\nHuman:"')
  messages: list[dict] = []
  for who, text in zip(parts[1::2], parts[2::2]):
    role = _HH_ROLES[who]
    if messages and messages[-1]["role"] == role:
      messages[-1]["content"] += "\n\n" + text.strip()
    else:
      messages.append({"role": role, "content": text.strip()})
  return messages


def hh(path: str, skipped: collections.Counter | None = None) -> Iterator[Ranking]:
  skipped = collections.Counter() if skipped is None else skipped
  marker = "\n\nAssistant:"
  for lineno, row in _objects(path, '{"chosen", "rejected"}'):
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if not isinstance(chosen, str) or not isinstance(rejected, str):
      raise UserError(f'{path}:{lineno}: needs string "chosen" and "rejected" transcripts')
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
      shared += 1
    cut = chosen.rfind(marker, 0, shared)
    if cut < 0:
      raise UserError(f'{path}:{lineno}: "chosen" and "rejected" share no "\\n\\nAssistant:" turn; '
                      f"expected two transcripts that differ in the final assistant reply")
    if chosen == rejected:
      skipped["identical responses"] += 1
      continue
    try:
      prompt = hh_messages(chosen[:cut])
    except UserError as e:
      raise UserError(f"{path}:{lineno}: {e}") from None
    if not prompt or prompt[-1]["role"] != "user":
      skipped["prompt does not end with a human turn"] += 1
      continue
    replies = [hh_messages(t[cut:]) for t in (chosen, rejected)]
    if any([m["role"] for m in r] != ["assistant"] for r in replies):
      skipped["a response holds a human turn"] += 1
      continue
    yield _make(prompt, [r[0]["content"] for r in replies], (0, 1), f"{path}:{lineno}")


def oasst(path: str, skipped: collections.Counter | None = None, lang: str | None = None) -> Iterator[Ranking]:
  """One ranking per prompter message with ≥ 2 ranked, usable assistant replies; `lang` filters trees."""
  skipped = collections.Counter() if skipped is None else skipped

  def walk(node: dict, path_messages: list, where: str) -> Iterator[Ranking]:
    prompt = path_messages + [{"role": "user", "content": node["text"]}]
    replies = [r for r in node.get("replies") or [] if r.get("role") == "assistant" and _usable(r)]
    ranked = [r for r in replies if r.get("rank") is not None]
    if len(ranked) >= 2:
      yield _make(prompt, [r["text"] for r in ranked], [r["rank"] for r in ranked], where)
    elif ranked:
      skipped["a single usable ranked reply"] += 1
    for reply in replies:
      for nxt in reply.get("replies") or []:
        if nxt.get("role") == "prompter" and _usable(nxt):
          yield from walk(nxt, prompt + [{"role": "assistant", "content": reply["text"]}], where)

  for lineno, row in _objects(path, '{"message_tree_id", "prompt": {...}}'):
    node = row.get("prompt")
    if not isinstance(node, dict) or node.get("role") != "prompter" or not isinstance(node.get("text"), str):
      raise UserError(f'{path}:{lineno}: no "prompt" prompter message with "text" '
                      f"(expected an OpenAssistant message tree per line)")
    if (lang and node.get("lang") != lang) or not _usable(node):
      continue
    yield from walk(node, [], f"{path}:{lineno}")


_SOURCES: dict[str, Callable[..., Iterator[Ranking]]] = {"ranked": ranked_jsonl, "hh": hh, "oasst": oasst}
KINDS = tuple(_SOURCES)


def source(kind: str, path: str, skipped: collections.Counter | None = None, **kwargs) -> Iterator[Ranking]:
  """The rankings of a file of one kind; what was skipped is counted into `skipped` by reason."""
  if kind not in _SOURCES:
    raise UserError(f"unknown ranking source kind {kind!r}; known: {', '.join(KINDS)}")
  return _SOURCES[kind](path, skipped, **kwargs)
