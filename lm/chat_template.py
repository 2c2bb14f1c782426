"""Conversations in an imported model's own chat template (Jinja), with the assistant-only loss mask.

  fmt = chat_template.ChatTemplate(tok)   # tok: lm.tokenizer.HFTokenizer whose folder has a template
  fmt.render(messages)                    # Rendered(ids_T, mask_T), as lm.conversation.render
  fmt.render_prompt(messages)             # ids ending with the template's generation prompt
  fmt.parse_assistant(generated_ids)      # {"message", "ended", "num_tokens"}, as lm.conversation
  chat_template.chat_format("own" | "model", tok)   # either format behind that one surface

The template is the model's own (tokenizer_config.json "chat_template" or
chat_template.jinja, kept by `HFTokenizer`), rendered by jinja2's sandboxed
environment with what transformers gives a template: trim_blocks,
lstrip_blocks, loop controls, `tojson`, `raise_exception`, `strftime_now` (the
time is frozen when the format is built, so a run renders one date) and the
special tokens' strings (`bos_token`, `eos_token`, ...). The text is tokenized
whole with the special tokens it writes parsed, so the ids equal transformers'
`apply_chat_template(messages, tokenize=True)`.

The loss mask is exact, by sentinels. A template is code: it adds text around
messages (headers, a date, Qwen3's empty think block) and may reshape content
(Llama 3 trims it). So the conversation is rendered twice, as is and with each
message's content replaced by a unique sentinel. The sentinel render is the
template's own text with one hole per message; walking it along the real
render, every literal stretch must match character for character and each hole
must hold the message's content or a whitespace-trimmed form of it (strip,
lstrip, rstrip, of spaces or of newlines). That gives each message's exact
character span, or a one-line error when the template writes something that
depends on the content (it then cannot be masked safely). A token is a target
when its characters overlap an assistant message's span, and so is everything
from there up to and including the first special token after the span: the
end-of-turn token the template closes the turn with (<|eot_id|>, <|im_end|>),
which the model must emit to stop. Headers, template text and other roles'
content are never targets. (Diffing renders of conversation prefixes would not
work: templates such as Qwen3's render earlier turns differently once a later
turn exists.)

Text that spells a special token never becomes one: a control token (a special
added token, or an added token the template writes) inside a message's span is
encoded as plain text, the stretches around it as usual, as transformers'
`apply_chat_template(..., sanitize_control_tokens=True)` does.

Messages: system, user and assistant turns. Tool calls and tool outputs are the
project's own format's (lm/conversation.py); a template's own tool syntax is
not mapped.
"""
from __future__ import annotations

import datetime
import json
import re
from typing import Sequence

import numpy as np

from lm import conversation
from lm.conversation import Rendered
from lm.errors import UserError

_HOLE = "\ue000{}\ue001"  # private-use code points: never in real text (checked), kept by tojson and trims
_HOLE_RE = re.compile("\ue000(\\d+)\ue001")
_TRIMS = (lambda s: s, str.strip, lambda s: s.strip("\n"), str.lstrip, lambda s: s.lstrip("\n"),
          str.rstrip, lambda s: s.rstrip("\n"))
FORMATS = ("own", "model")


def _compile(source: str, now: datetime.datetime):
  import jinja2
  from jinja2 import ext, nodes
  from jinja2.sandbox import ImmutableSandboxedEnvironment

  class Generation(ext.Extension):
    """`{% generation %}…{% endgeneration %}` (transformers' assistant-mask markers): the body as is."""
    tags = {"generation"}

    def parse(self, parser):
      lineno = next(parser.stream).lineno
      body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
      return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
      return caller()

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson escapes HTML characters; templates expect plain JSON.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                      extensions=[Generation, ext.loopcontrols])
  env.filters["tojson"] = tojson
  env.globals.update(raise_exception=raise_exception, strftime_now=now.strftime)
  try:
    return env.from_string(source)
  except jinja2.TemplateSyntaxError as e:
    raise UserError(f"chat template: line {e.lineno}: {e.message}; fix tokenizer_config.json's "
                    f"chat_template or use data.chat_template='own'") from None


class ChatTemplate:
  """A tokenizer's Jinja chat template: render, prompt and parse like lm.conversation (see module doc)."""

  def __init__(self, tok, source: str | None = None):
    self.tok = tok
    source = source if source is not None else getattr(tok, "chat_template", None)
    if not source:
      raise UserError("chat template: the tokenizer has none (no chat_template in tokenizer_config.json, no "
                      "chat_template.jinja); use the project's format (data.chat_template='own')")
    self._template = _compile(source, datetime.datetime.now())
    self._strings = dict(getattr(tok, "special_strings", {}))
    added = dict(getattr(tok, "added_special_ids", {}))
    self._special = set(added.values())
    # transformers' control tokens: every special token, and other added tokens the template writes.
    control = list(added) + [t for t in getattr(tok, "added_ids", {}) if t in source and not t.isspace()]
    self._control = re.compile("|".join(map(re.escape, sorted(control, key=len, reverse=True))) or "(?!)")
    probe = self.render([{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}])
    self.end_of_turn_id = int(probe.ids_T[np.flatnonzero(probe.mask_T)[-1]])
    self.stop_ids = sorted({self.end_of_turn_id} | ({tok.eos_id} if tok.eos_id is not None else set()))

  def text(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
    """The template's rendering of `messages` (what transformers' apply_chat_template(tokenize=False) gives)."""
    import jinja2
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    try:
      # tools/documents as transformers passes them when there are none (`is not none` tests see None).
      return self._template.render(messages=plain, tools=None, documents=None,
                                   add_generation_prompt=add_generation_prompt, **self._strings)
    except jinja2.TemplateError as e:
      reason = " ".join(str(e).split())
      raise UserError(f"chat template: {reason}; the conversation does not fit the model's template") from None

  def _spans(self, messages: Sequence[dict], add_generation_prompt: bool) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and each message's character span in it (module doc: sentinels)."""
    text = self.text(messages, add_generation_prompt)
    if _HOLE_RE.search(text):
      raise UserError("conversation: a message contains private-use characters U+E000/U+E001, which the "
                      "chat-template renderer reserves; remove them from the data")
    holes = [dict(m, content=_HOLE.format(i)) for i, m in enumerate(messages)]
    parts = _HOLE_RE.split(self.text(holes, add_generation_prompt))
    literals, order = parts[0::2], [int(i) for i in parts[1::2]]
    if sorted(order) != list(range(len(messages))):
      missing = sorted(set(range(len(messages))) - set(order)) or sorted(order)
      raise UserError(f"chat template: message {missing[0]}'s content is not rendered exactly once; "
                      f"this template cannot be masked (use data.chat_template='own')")
    spans: list[tuple[int, int]] = [(0, 0)] * len(messages)
    if not text.startswith(literals[0]):
      raise UserError("chat template: renders differently with other message contents; cannot mask it")
    pos = len(literals[0])
    for k, i in enumerate(order):
      after, last = literals[k + 1], k + 1 == len(order)
      for trim in _TRIMS:
        content = trim(messages[i]["content"])
        end = pos + len(content)
        if text.startswith(content + after, pos) and (not last or end + len(after) == len(text)):
          break
      else:
        raise UserError(f"chat template: message {i} ({messages[i]['role']}) is not rendered verbatim (nor "
                        f"trimmed) or changes the text around it; cannot mask it (use data.chat_template='own')")
      spans[i] = (pos, end)
      pos = end + len(after)
    return text, spans

  def _encode(self, text: str, spans: Sequence[tuple[int, int]]) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids and offsets of `text`, control tokens inside the spans encoded as plain text."""
    forged = sorted(m.span() for a, b in spans for m in self._control.finditer(text, a, b))
    pieces, pos = [], 0  # (start, stop, whether special tokens are parsed)
    for a, b in forged:
      pieces += [(pos, a, True), (a, b, False)]
      pos = b
    pieces.append((pos, len(text), True))
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    for start, stop, special in pieces:
      if stop > start:
        piece_ids, piece_offsets = self.tok.encode_offsets(text[start:stop], special=special)
        ids += piece_ids
        offsets += [(start + a, start + b) for a, b in piece_offsets]
    return ids, offsets

  def _validate(self, messages: Sequence[dict], prompt: bool) -> None:
    conversation.validate(messages, prompt=prompt)
    for i, m in enumerate(messages):
      if m["role"] == "tool" or "tool_call" in m:
        raise UserError(f"conversation: message {i}: tool calls and outputs are not mapped onto a model's own "
                        f"chat template; use data.chat_template='own' for tool-use data")

  def render(self, messages: Sequence[dict]) -> Rendered:
    """A finished conversation → (ids_T, mask_T): 1 on assistant content and its end-of-turn token."""
    self._validate(messages, prompt=False)
    text, spans = self._spans(messages, add_generation_prompt=False)
    ids, offsets = self._encode(text, spans)
    mask = np.zeros(len(ids), np.int32)
    starts = np.asarray([a for a, _ in offsets] + [len(text)])
    stops = np.asarray([b for _, b in offsets] + [len(text)])
    for (a, b), m in zip(spans, messages):
      if m["role"] != "assistant":
        continue
      inside = np.flatnonzero((starts[:-1] < b) & (stops[:-1] > a) | (starts[:-1] == stops[:-1])
                              & (starts[:-1] >= a) & (starts[:-1] < b))
      first = int(inside[0]) if inside.size else int(np.searchsorted(starts[:-1], b))
      close = next((j for j in range(first, len(ids)) if ids[j] in self._special and starts[j] >= b), None)
      if close is None:
        raise UserError(f"chat template: no special token closes assistant message "
                        f"{messages.index(m)}; the model could never learn to stop")
      mask[first:close + 1] = 1
    return Rendered(np.asarray(ids, np.int32), mask)

  def render_prompt(self, messages: Sequence[dict]) -> np.ndarray:
    """Ids of a prompt ending with a user message, followed by the template's generation prompt."""
    self._validate(messages, prompt=True)
    text, spans = self._spans(messages, add_generation_prompt=True)
    return np.asarray(self._encode(text, spans)[0], np.int32)

  def parse_assistant(self, ids: Sequence[int]) -> dict:
    """Generated ids → {"message", "ended", "num_tokens"}: text up to the end-of-turn token
    (ended=True, counted); any other special token stops it with ended=False."""
    ids = [int(t) for t in ids]
    n, ended = len(ids), False
    for i, t in enumerate(ids):
      if t in self._special:
        n, ended = (i + 1, True) if t == self.end_of_turn_id else (i, False)
        break
    content = self.tok.decode(ids[:n - 1] if ended else ids[:n])
    return {"message": {"role": "assistant", "content": content}, "ended": ended, "num_tokens": n}


class OwnFormat:
  """The project's conversation format (lm/conversation.py) behind the same surface."""

  def __init__(self, tok):
    missing = [t for t in ("<|bos|>", "<|im_start|>", "<|im_sep|>", "<|im_end|>")
               if t not in getattr(tok, "special_ids", {})]
    if missing:
      raise UserError(f"tokenizer: lacks the conversation format's special tokens {missing}; pretrain with "
                      f"experiments.train_tokenizer's BPE, or use an imported model's template "
                      f"(data.chat_template='model')")
    self.tok = tok
    self.end_of_turn_id = tok.special_ids["<|im_end|>"]
    self.stop_ids = sorted({self.end_of_turn_id} | ({tok.eos_id} if tok.eos_id is not None else set()))

  def render(self, messages: Sequence[dict]) -> Rendered:
    return conversation.render(messages, self.tok)

  def render_prompt(self, messages: Sequence[dict]) -> np.ndarray:
    return conversation.render_prompt(messages, self.tok)

  def parse_assistant(self, ids: Sequence[int]) -> dict:
    return conversation.parse_assistant(ids, self.tok)


def chat_format(kind: str, tok, key: str = "config.data.chat_template"):
  """'own' (this project's format) or 'model' (the tokenizer's own Jinja template)."""
  if kind not in FORMATS:
    raise UserError(f"{key}: {kind!r} is not one of {FORMATS}")
  return OwnFormat(tok) if kind == "own" else ChatTemplate(tok)
