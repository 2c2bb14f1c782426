"""Chat in the terminal with streaming output.

  python -m experiments.chat --workdir=runs/tiny
  python -m experiments.chat --hf_dir=path/to/qwen2_folder --tokenizer=hf
  python -m experiments.chat --workdir=runs/tiny --prompt="What is a tuple?"   # one turn, then exit

Base-model mode: a pretrained model has never seen a conversation, so the chat
is a document it continues — an optional preamble, then alternating
"User: ...\\nAssistant: ..." lines. The answer stops where the model starts
writing the user's next line ("\\nUser:"), at EOS, or after --max_new_tokens.
Tokens are decoded in jitted chunks of --chunk and printed as they arrive.
When the history no longer fits the model's context, the oldest turns go.
Commands at the prompt: /reset (forget the history), /quit (or Ctrl-D).

Model, tokenizer and sampling flags are experiments.sample's (--workdir or
--hf_dir, --temperature, --top_k, --top_p, --seed, --max_new_tokens).
"""
from __future__ import annotations

import sys

from absl import flags

from experiments import sample
from lm import cli, sampling

_PREAMBLE = flags.DEFINE_string(
    "preamble", "A conversation between a curious user and a helpful assistant.\n\n",
    "Text before the first turn (backslash escapes work).")
_CHUNK = flags.DEFINE_integer("chunk", 4, "Tokens decoded per jitted call while streaming.")

USER, ASSISTANT, STOP = "User: ", "Assistant:", "\nUser:"


class Conversation:
  """The running transcript as base-model text; trimmed from the oldest turn to fit the context."""

  def __init__(self, preamble: str):
    self.preamble = preamble
    self.turns: list[tuple[str, str]] = []

  def prompt(self, message: str) -> str:
    past = "".join(f"{USER}{u}\n{ASSISTANT} {a}\n" for u, a in self.turns)
    return f"{self.preamble}{past}{USER}{message}\n{ASSISTANT}"

  def ids_that_fit(self, tok, message: str, budget: int) -> list[int]:
    while True:
      ids = sample.prompt_ids(tok, self.prompt(message))
      if len(ids) <= budget or not self.turns:
        return ids[-budget:]  # a single over-long message keeps its end
      self.turns.pop(0)


def held_back(text: str, stops: list[str]) -> int:
  """Characters at the end of `text` that may be the start of a stop string (or a split character)."""
  if text.endswith("\ufffd"):
    return 1
  for n in range(min(len(text), max(len(s) for s in stops)), 0, -1):
    if any(s.startswith(text[-n:]) for s in stops):
      return n
  return 0


def stream_reply(loaded, ids: list[int], out=sys.stdout) -> str:
  """Print the reply as it is decoded; return it without the stop text."""
  tok = loaded.tokenizer
  eos = getattr(tok, "eos_id", None)
  flags_ = flags.FLAGS
  new: list[int] = []
  shown = 0
  text = ""
  for chunk_B in sampling.stream(loaded.model, loaded.params, [ids], flags_.max_new_tokens, chunk=_CHUNK.value,
                                 temperature=flags_.temperature, top_k=flags_.top_k, top_p=flags_.top_p,
                                 seed=flags_.seed + len(ids), stop_ids=[eos] if eos is not None else [],
                                 pad_id=getattr(tok, "pad_id", 0) or 0, pad_multiple=32,  # few recompiles
                                 mesh=loaded.mesh, rule_pairs=loaded.rule_pairs):
    new += [i for i in chunk_B[0].tolist() if i != eos]
    text, stopped = sample.cut_at_stop(tok.decode(new), [STOP])
    visible = len(text) if stopped else len(text) - held_back(text, [STOP])
    if visible > shown:
      out.write(text[shown:visible])
      out.flush()
      shown = visible
    if stopped:
      break
  out.write(text[shown:] + "\n")
  out.flush()
  return text.strip()


def setup():
  if _CHUNK.value < 1:
    raise ValueError("--chunk must be at least 1")
  loaded = sample.load(flags.FLAGS.workdir, flags.FLAGS.hf_dir, flags.FLAGS.step, flags.FLAGS.tokenizer)
  budget = loaded.model.cfg.max_len - flags.FLAGS.max_new_tokens
  if budget < 16:
    raise ValueError(f"--max_new_tokens={flags.FLAGS.max_new_tokens} leaves under 16 tokens of the "
                     f"model's max_len {loaded.model.cfg.max_len} for the conversation")
  return loaded, budget


def work(prepared) -> None:
  loaded, budget = prepared
  convo = Conversation(sample.unescape(_PREAMBLE.value))
  one_shot = flags.FLAGS.prompt
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
    reply = stream_reply(loaded, convo.ids_that_fit(loaded.tokenizer, message, budget))
    convo.turns.append((message, reply))
    if one_shot:
      return


if __name__ == "__main__":
  cli.run(setup, work, required=())
