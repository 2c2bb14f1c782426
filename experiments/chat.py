"""Chat in the terminal with streaming output, in the one conversation format.

  python -m experiments.chat --workdir=runs/sft                     # an SFT run (or any training run)
  python -m experiments.chat --workdir=runs/sft --prompt="What is 12+30?"   # one turn, then exit
  python -m experiments.chat --hf_dir=path/to/qwen2_folder --tokenizer=hf --format=text
  python -m experiments.chat --hf_dir=path/to/Llama-3.2-1B-Instruct --tokenizer=hf --format=template
  python -m experiments.chat --workdir=runs/sft_tools --tools=python,search \
      --search_folder=runs/data/clean/jsonl                          # the model calls tools as it answers

The conversation is rendered by `lm.conversation` exactly as SFT trained on it
(`<|im_start|>role<|im_sep|>content<|im_end|>`, generation prompt
`<|im_start|>assistant<|im_sep|>`); the reply ends at `<|im_end|>`, at EOS, or
after --max_new_tokens. `--format=text` is for tokenizers without the chat
special tokens (base models, imported folders): the history becomes a
"User: ... / Assistant: ..." document that the model continues, and the reply
stops where it starts the user's next line. `--format=template` renders the
model's own chat template (an imported instruct model, or an SFT run with
data.chat_template='model': lm/chat_template.py) and stops at its end-of-turn
token. Tokens are decoded in jitted chunks
of --chunk and printed as they arrive; the oldest turns go when the history no
longer fits the context. Commands at the prompt: /reset, /quit (or Ctrl-D).
"""
from __future__ import annotations

import sys

from absl import flags

from configs import base
from lm import chat_template, cli, conversation, engine, init_from, sampling, sharding
from lm import tools as tools_lib
from lm.errors import UserError

_M = cli.model_flags()
_SYSTEM = flags.DEFINE_string("system", "", "System message at the start of the conversation (chat format).")
_FORMAT = flags.DEFINE_enum("format", "chat", ["chat", "text", "template"],
                            "chat: the special-token format; text: base-model mode; "
                            "template: the model's own chat template.")
_PREAMBLE = flags.DEFINE_string(
    "preamble", "A conversation between a curious user and a helpful assistant.\n\n",
    "Text before the first turn in --format=text (backslash escapes work).")
_CHUNK = flags.DEFINE_integer("chunk", 4, "Tokens decoded per jitted call while streaming.")
_TOOLS = flags.DEFINE_string("tools", "", "Tools the model may call (chat format): python, search, or both, comma-separated.")
_SEARCH = flags.DEFINE_string("search_folder", "", "JSONL/Parquet pages the search tool indexes (with --tools=...search).")

USER, ASSISTANT, TEXT_STOP = "User: ", "Assistant:", "\nUser:"


class Conversation:
  """The running conversation; `ids_that_fit` renders it and drops the oldest turns to fit."""

  def __init__(self, fmt: str = "chat", system: str = "", preamble: str = "", template=None):
    self.fmt, self.system, self.preamble, self.template = fmt, system, preamble, template
    self.turns: list[tuple[str, str]] = []

  def messages(self, message: str) -> list[dict]:
    msgs = [{"role": "system", "content": self.system}] if self.system else []
    for u, a in self.turns:
      msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return msgs + [{"role": "user", "content": message}]

  def render(self, tok, message: str) -> list[int]:
    if self.fmt == "chat":
      return conversation.render_prompt(self.messages(message), tok).tolist()
    if self.fmt == "template":
      return self.template.render_prompt(self.messages(message)).tolist()
    past = "".join(f"{USER}{u}\n{ASSISTANT} {a}\n" for u, a in self.turns)
    bos = getattr(tok, "bos_id", None)
    return ([bos] if bos is not None and bos >= 0 else []) + tok.encode(
        f"{self.preamble}{past}{USER}{message}\n{ASSISTANT}")

  def ids_that_fit(self, tok, message: str, budget: int) -> list[int]:
    while True:
      ids = self.render(tok, message)
      if len(ids) <= budget or not self.turns:
        return ids[-budget:]  # a single over-long message keeps its end
      self.turns.pop(0)


def held_back(text: str, stops: list[str]) -> int:
  """Characters at the end of `text` that may be the start of a stop string (or a split character)."""
  if text.endswith("\ufffd"):
    return 1
  for n in range(min(len(text), max((len(s) for s in stops), default=0)), 0, -1):
    if any(s.startswith(text[-n:]) for s in stops):
      return n
  return 0


def stop_ids(tok, fmt: str, template=None) -> list[int]:
  ids = [getattr(tok, "eos_id", None)]
  if fmt == "chat":
    ids.append(tok.special_ids["<|im_end|>"])
  if fmt == "template":
    ids.append(template.end_of_turn_id)
  return [i for i in dict.fromkeys(ids) if i is not None]


def stream_reply(loaded, ids: list[int], fmt: str = "chat", out=sys.stdout, template=None) -> str:
  """Print the reply as it is decoded; return it without the stop token or text."""
  tok = loaded.tokenizer
  stops_id = stop_ids(tok, fmt, template)
  stops_text = [TEXT_STOP] if fmt == "text" else []
  new: list[int] = []
  shown = 0
  text = ""
  for chunk_B in sampling.stream(loaded.model, loaded.params, [ids], _M.max_new_tokens.value, chunk=_CHUNK.value,
                                 temperature=_M.temperature.value, top_k=_M.top_k.value, top_p=_M.top_p.value,
                                 seed=_M.seed.value + len(ids), stop_ids=stops_id,
                                 pad_id=getattr(tok, "pad_id", 0) or 0, pad_multiple=32,  # few recompiles
                                 mesh=loaded.mesh, rule_pairs=loaded.rules):
    new += [i for i in chunk_B[0].tolist() if i not in stops_id]
    text, stopped = sampling.cut_at_stop(tok.decode(new), stops_text)
    visible = len(text) if stopped else len(text) - held_back(text, stops_text)
    if visible > shown:
      out.write(text[shown:visible])
      out.flush()
      shown = visible
    if stopped:
      break
  out.write(text[shown:] + "\n")
  out.flush()
  return text.strip()


def shown_turn(tok, ids: list[int]) -> tuple[str, str]:
  """(what the terminal shows of a partial assistant turn, its final text): the assistant's words,
  each tool call as "→ name: arguments" and each output as "← output" on their own lines."""
  turn = conversation.parse_turn(ids, tok)
  parts, said = [], []
  for m in turn["messages"]:
    if m["role"] == "tool":
      parts.append(f"\n  ← {m['content'].strip()}\n")
      continue
    parts.append(m["content"])
    said.append(m["content"])
    if "tool_call" in m:
      parts.append(f"\n  → {m['tool_call']['name']}: {m['tool_call']['arguments']}")
  return "".join(parts), "".join(said)


def stream_reply_with_tools(loaded, ids: list[int], tools: dict, out=sys.stdout, max_tool_tokens: int = 96) -> str:
  """Print the reply, its tool calls and their outputs as they happen; return the assistant's words.
  A tool's output is cut at `max_tool_tokens` (what the model's tool-use SFT evaluated with)."""
  tok = loaded.tokenizer
  new: list[int] = []
  shown = ""
  for event in engine.stream(loaded.model, loaded.params, tok, [ids], _M.max_new_tokens.value, tools=tools,
                             chunk=_CHUNK.value, temperature=_M.temperature.value, top_k=_M.top_k.value,
                             top_p=_M.top_p.value, seed=_M.seed.value + len(ids), pad_multiple=32,
                             max_tool_tokens=max_tool_tokens, mesh=loaded.mesh, rule_pairs=loaded.rules):
    new += event.new_tokens[0]
    text, _ = shown_turn(tok, new)
    text = text[:len(text) - held_back(text, [])]
    if text.startswith(shown) and len(text) > len(shown):
      out.write(text[len(shown):])
      out.flush()
      shown = text
  text, said = shown_turn(tok, new)
  out.write(text[len(shown):] + "\n" if text.startswith(shown) else "\n")
  out.flush()
  return said.strip()


def setup():
  # Every argument is checked before the model is loaded.
  cli.check_model_flags()
  if _CHUNK.value < 1:
    raise UserError(f"--chunk must be at least 1, got {_CHUNK.value}")
  mesh = sharding.make_mesh(base.mesh_config())
  loaded = init_from.load_for_cli(_M.workdir.value, _M.hf_dir.value, _M.step.value, _M.tokenizer.value,
                                  mesh, tuple(base.SHARDING_RULES))
  if _FORMAT.value == "chat" and "<|im_end|>" not in getattr(loaded.tokenizer, "special_ids", {}):
    raise UserError("--format=chat: this tokenizer has no chat special tokens (<|im_start|>, ...); "
                    "use --format=text, --format=template, or a tokenizer from experiments.train_tokenizer")
  template = chat_template.ChatTemplate(loaded.tokenizer) if _FORMAT.value == "template" else None
  tools, tool_tokens = {}, 96
  if _TOOLS.value:
    if _FORMAT.value != "chat":
      raise UserError("--tools needs --format=chat (tool calls are special tokens of the chat format)")
    use = [n for n in _TOOLS.value.split(",") if n]
    if "search" in use and not _SEARCH.value:
      raise UserError("--tools=...search needs --search_folder (e.g. runs/data/clean/jsonl)")
    # The run's own tool settings (config.json of a training workdir): the snippets it learnt to read
    # and the output budget its evaluation cut at; an imported model gets the defaults.
    trained = tools_lib.trained_with(_M.workdir.value) if _M.workdir.value else {}
    tools = tools_lib.for_conversation(use, search_folder=_SEARCH.value or None, key="--tools",
                                       **tools_lib.search_options(trained, key=f"{_M.workdir.value}/config.json: tools"))
    tool_tokens = int(trained.get("max_tool_tokens", 96))
    engine.tool_ids(loaded.tokenizer, tools)  # the tokenizer has the tools' markers
  budget = loaded.model.cfg.max_len - _M.max_new_tokens.value
  if budget < 16:
    raise UserError(f"--max_new_tokens={_M.max_new_tokens.value} leaves under 16 tokens of the "
                    f"model's max_len {loaded.model.cfg.max_len} for the conversation")
  return loaded, budget, template, (tools, tool_tokens)


def work(prepared) -> None:
  loaded, budget, template, (tools, tool_tokens) = prepared
  convo = Conversation(_FORMAT.value, _SYSTEM.value, cli.unescape(_PREAMBLE.value), template)
  one_shot = _M.prompt.value
  while True:
    if one_shot:
      message = one_shot
      print(f"{USER}{message}")
    else:
      try:
        message = input(USER).strip()
      except (EOFError, KeyboardInterrupt):
        print()
        return
    if message == "/quit":
      return
    if message == "/reset":
      convo.turns.clear()
      continue
    if not message:
      continue
    print(f"{ASSISTANT} ", end="", flush=True)
    ids = convo.ids_that_fit(loaded.tokenizer, message, budget)
    reply = stream_reply_with_tools(loaded, ids, tools, max_tool_tokens=tool_tokens) if tools else \
        stream_reply(loaded, ids, _FORMAT.value, template=template)
    convo.turns.append((message, reply))
    if one_shot:
      return


if __name__ == "__main__":
  cli.run(setup, work, required=())
