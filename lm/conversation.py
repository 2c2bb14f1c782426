"""The one conversation format: messages → token ids + loss mask, and generated ids → a message.

SFT, chat, evaluation, RL prompts and reward-model inputs all render through
here, so a model only ever sees one layout:

  <|bos|>
  <|im_start|>system<|im_sep|>You are terse.<|im_end|>
  <|im_start|>user<|im_sep|>What is 6*7?<|im_end|>
  <|im_start|>assistant<|im_sep|>Let me compute.<|python_start|>6*7<|python_end|>
      <|output_start|>42<|output_end|>It is 42.<|im_end|>

A conversation is a list of messages `{"role", "content"}` with roles system
(first only), user, assistant and tool. An assistant message may carry
`"tool_call": {"name": "python" | "search", "arguments": str}`; its content is
the text before the call. The next message must then be the `tool` message
holding the call's output, and the assistant message after that continues the
*same* turn (the rollout engine forces the output tokens into a running
decode, so the turn is never closed around a tool call). One `<|im_end|>`
closes the turn.

The loss mask marks what the assistant must learn to emit: its text, its tool
calls (markers included) and its closing `<|im_end|>`; never the BOS, a turn
header, system/user text, or a tool's output (which the model is given, not
asked to predict). `mask_T[i]` says whether `ids_T[i]` is a target; a loss
shifts by one itself.

Text is encoded with `tok.encode`, which never emits special ids, so a message
that spells "<|im_end|>" stays plain text: a user cannot forge a turn.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from lm.errors import UserError

ROLES = ("system", "user", "assistant", "tool")
# Tool name → the special tokens that bracket a call's arguments.
TOOLS = {
    "python": ("<|python_start|>", "<|python_end|>"),
    "search": ("<|search_start|>", "<|search_end|>"),
}


class Rendered(NamedTuple):
  ids_T: np.ndarray   # int32 token ids, starting with <|bos|>
  mask_T: np.ndarray  # int32, 1 where ids_T[i] is a token the assistant must learn


def _fail(i: int, msg: str) -> None:
  raise UserError(f"conversation: message {i}: {msg}")


def validate(messages: Sequence[dict], *, prompt: bool = False) -> None:
  """Raises a one-line ValueError naming the first offending message.

  A training conversation (`prompt=False`) ends with a finished assistant
  reply; a prompt ends with a user message (a new turn to answer) or a tool
  message (an open turn to continue).
  """
  if not isinstance(messages, (list, tuple)) or not messages:
    raise UserError("conversation: empty or not a list of messages; give at least one "
                     "{'role': ..., 'content': ...} dict")
  prev = None  # the previous message's role, "call" for an assistant message with a tool call
  for i, m in enumerate(messages):
    if not isinstance(m, dict):
      _fail(i, f"is a {type(m).__name__}, not a dict with 'role' and 'content'")
    role = m.get("role")
    if role not in ROLES:
      _fail(i, f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    if not isinstance(m.get("content"), str):
      _fail(i, f"{role} message needs a string 'content' (got {type(m.get('content')).__name__})")
    if "tool_call" in m and role != "assistant":
      _fail(i, f"only assistant messages may have a 'tool_call' (this one is {role})")
    if prev == "call" and role != "tool":
      _fail(i, f"{role} message follows an assistant tool call; the call's output must come next "
               f"as a {{'role': 'tool'}} message")
    if role == "system" and i != 0:
      _fail(i, "a system message may only be the first message")
    if role == "tool" and prev != "call":
      _fail(i, "tool message without a preceding assistant 'tool_call'; a tool output must "
               "directly follow the call that produced it")
    if prev == "tool" and role != "assistant":
      _fail(i, f"{role} message follows a tool output; the assistant must continue its turn first")
    if role == "assistant" and prev == "assistant":
      _fail(i, "two assistant messages in a row with no tool call between; merge them or put a "
               "user message between")
    if role == "assistant" and "tool_call" in m:
      call = m["tool_call"]
      if not isinstance(call, dict) or call.get("name") not in TOOLS:
        _fail(i, f"tool_call must be {{'name': one of {sorted(TOOLS)}, 'arguments': str}}, got {call!r}")
      if not isinstance(call.get("arguments"), str):
        _fail(i, "tool_call 'arguments' must be a string")
      prev = "call"
    else:
      prev = role
  last = len(messages) - 1
  if prompt and prev not in ("user", "tool"):
    _fail(last, f"a prompt must end with a user or tool message, not {prev!r}")
  if not prompt and prev != "assistant":
    _fail(last, f"conversation ends with {'an assistant tool call' if prev == 'call' else 'a ' + prev} "
                f"message; a training conversation ends with an assistant reply "
                f"(use render_prompt for a prompt)")


def _encode(messages: Sequence[dict], tok) -> Rendered:
  """Renders already validated messages; a trailing user message gets an open assistant header."""
  sp = tok.special_ids
  ids: list[int] = [sp["<|bos|>"]]
  mask: list[int] = [0]

  def add(tokens, learn):
    ids.extend(tokens)
    mask.extend([int(learn)] * len(tokens))

  def header(role):
    add([sp["<|im_start|>"], *tok.encode(role), sp["<|im_sep|>"]], False)

  for i, m in enumerate(messages):
    role = m["role"]
    if role == "tool":
      add([sp["<|output_start|>"], *tok.encode(m["content"]), sp["<|output_end|>"]], False)
      continue
    in_open_turn = role == "assistant" and i > 0 and messages[i - 1]["role"] == "tool"
    if not in_open_turn:
      header(role)
    learn = role == "assistant"
    add(tok.encode(m["content"]), learn)
    if "tool_call" in m:
      start, end = TOOLS[m["tool_call"]["name"]]
      add([sp[start], *tok.encode(m["tool_call"]["arguments"]), sp[end]], True)
      continue  # the turn stays open for the tool's output
    add([sp["<|im_end|>"]], learn)
  if messages[-1]["role"] == "user":
    header("assistant")
  return Rendered(np.asarray(ids, np.int32), np.asarray(mask, np.int32))


def render(messages: Sequence[dict], tok) -> Rendered:
  """A finished conversation → (ids_T, mask_T) for SFT and reward-model inputs."""
  validate(messages)
  return _encode(messages, tok)


def render_prompt(messages: Sequence[dict], tok) -> np.ndarray:
  """Ids to generate from: ends with `<|im_start|>assistant<|im_sep|>` after a user message,
  or inside the open assistant turn right after `<|output_end|>` after a tool message.

  Always a prefix of `render(messages + [reply])`.
  """
  validate(messages, prompt=True)
  return _encode(messages, tok).ids_T


def parse_assistant(ids: Sequence[int], tok) -> dict:
  """Generated ids (after the prompt) → {"message", "ended", "num_tokens"}.

  Reads text until `<|im_end|>` (ended=True) or a complete tool call
  (ended=False: the caller runs the tool and continues the turn with its output).
  `message` is an assistant message that `render` accepts; `num_tokens` is how
  many ids it used, stop token included, so the caller can cut what follows.
  Any other special token, or running out of ids, stops with ended=False and
  no tool call: the generation broke the format.
  """
  sp = tok.special_ids
  im_end = sp["<|im_end|>"]
  starts = {sp[s]: (name, sp[e]) for name, (s, e) in TOOLS.items()}
  special = set(sp.values())
  ids = [int(t) for t in ids]
  text: list[int] = []
  message: dict = {"role": "assistant", "content": ""}
  ended, n = False, len(ids)
  for i, t in enumerate(ids):
    if t not in special:
      text.append(t)
      continue
    if t == im_end:
      ended, n = True, i + 1
    elif t in starts:
      name, end = starts[t]
      if end in ids[i + 1:]:
        j = ids.index(end, i + 1)
        args = ids[i + 1:j]
        if not special.intersection(args):
          message["tool_call"] = {"name": name, "arguments": tok.decode(args)}
          n = j + 1
        else:
          n = i
      else:
        n = i
    else:
      n = i
    break
  message["content"] = tok.decode(text)
  return {"message": message, "ended": ended, "num_tokens": n}


def parse_turn(ids: Sequence[int], tok) -> dict:
  """A whole generated assistant turn, tool outputs included → {"messages", "ended", "num_tokens"}.

  The inverse of rendering an assistant turn: each tool call is followed by the
  `<|output_start|>…<|output_end|>` the engine forced in, read as a tool message.
  """
  sp = tok.special_ids
  out_start, out_end = sp["<|output_start|>"], sp["<|output_end|>"]
  ids = [int(t) for t in ids]
  messages: list[dict] = []
  pos = 0
  while True:
    part = parse_assistant(ids[pos:], tok)
    messages.append(part["message"])
    pos += part["num_tokens"]
    if part["ended"] or "tool_call" not in part["message"]:
      return {"messages": messages, "ended": part["ended"], "num_tokens": pos}
    if pos >= len(ids) or ids[pos] != out_start or out_end not in ids[pos + 1:]:
      return {"messages": messages, "ended": False, "num_tokens": pos}
    j = ids.index(out_end, pos + 1)
    messages.append({"role": "tool", "content": tok.decode(ids[pos + 1:j])})
    pos = j + 1
