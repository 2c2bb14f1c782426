"""experiments.sample and experiments.chat: end to end on an exported Hugging Face folder, the
streaming helpers, and one-line user errors."""
import io
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import types

import pytest

from configs import base
from experiments import chat, sample
from lm import cli as lm_cli
from lm import conversation, hf, init_from, sampling
from lm.tokenizer import ByteTokenizer
from lm import model as model_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
  """A random GPT-2-style model exported as a Hugging Face folder, vocabulary big enough for bytes."""
  cfg = base.model_config("tiny")
  cfg.update(vocab_size=320, d_model=32, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=64, max_len=128)
  model = model_lib.build(cfg)
  params = nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"])
  folder = str(tmp_path_factory.mktemp("hf"))
  hf.export_checkpoint(params, cfg, folder)
  return folder


def cli(module, *args, stdin=""):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                        input=stdin, env=env, timeout=300)


def test_sample_cli_continues_a_few_shot_prompt(hf_folder, tmp_path):
  shots = tmp_path / "shots.txt"
  shots.write_text("Q: one\nA: 1\n\nQ: {prompt}\nA:")
  out = cli("experiments.sample", f"--hf_dir={hf_folder}", "--tokenizer=byte", "--prompt=two",
            f"--few_shot_file={shots}", "--max_new_tokens=12", "--temperature=0", "--num_samples=2")
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  assert lines[0] == "--- sample 0 ---" and "Q: two" in out.stdout
  first, second = out.stdout.removeprefix("--- sample 0 ---\n").split("--- sample 1 ---\n")
  assert first.strip() == second.strip()  # greedy: both rows decode the same text


def test_chat_cli_streams_one_turn(hf_folder):
  out = cli("experiments.chat", f"--hf_dir={hf_folder}", "--tokenizer=byte", "--prompt=hello",
            "--max_new_tokens=16", "--chunk=3")
  assert out.returncode == 0, out.stderr
  assert out.stdout.startswith("User: hello\nAssistant: ")


@pytest.mark.parametrize("args,needle", [
    (["--prompt=x"], "exactly one of --workdir"),
    (["--workdir=/nonexistent/run", "--prompt=x"], "--workdir: no checkpoints"),
    (["--hf_dir=/nonexistent/hf", "--prompt=x"], "--hf_dir: no such folder"),
])
def test_user_errors_are_one_line(args, needle):
  out = cli("experiments.sample", *args)
  assert out.returncode == 2
  assert needle in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_missing_few_shot_file_names_the_flag(hf_folder):
  out = cli("experiments.sample", f"--hf_dir={hf_folder}", "--tokenizer=byte", "--few_shot_file=/no/such.txt")
  assert out.returncode == 2 and "--few_shot_file" in out.stderr


def test_stop_text_is_held_back_until_decided():
  stops = ["\nUser:"]
  assert chat.held_back("Sure.\nUs", stops) == 3
  assert chat.held_back("Sure.", stops) == 0
  assert chat.held_back("caf\ufffd", stops) == 1
  assert sampling.cut_at_stop("Fine.\nUser: next", stops) == ("Fine.", True)
  assert sampling.cut_at_stop("a\\nb", ["\\n"]) == ("a", True)
  assert lm_cli.unescape("\\n") == "\n"


def test_conversation_drops_oldest_turns_to_fit():
  class Bytes:
    bos_id = None

    def encode(self, text):
      return list(text.encode())

  convo = chat.Conversation("text", preamble="P\n")
  convo.turns = [("first question", "first answer"), ("second", "answer")]
  ids = convo.ids_that_fit(Bytes(), "now", budget=60)  # all turns: 98 bytes; without the first: 53
  assert len(ids) == 53 and convo.turns == [("second", "answer")]
  assert bytes(ids).decode().endswith("User: now\nAssistant:")


def test_stream_reply_stops_at_the_next_user_line(monkeypatch):
  class Tok:
    eos_id, pad_id = 99, 0

    def decode(self, ids):
      return "".join(chr(i) for i in ids)

  text = "Hi there\nUser: more"
  chunks = [[[ord(c) for c in text[i:i + 3]]] for i in range(0, len(text), 3)]
  monkeypatch.setattr(chat.sampling, "stream", lambda *a, **k: iter(__import__("numpy").asarray(c) for c in chunks))
  value = lambda v: types.SimpleNamespace(value=v)
  monkeypatch.setattr(chat, "_M", types.SimpleNamespace(max_new_tokens=value(8), temperature=value(0.0),
                                                        top_k=value(0), top_p=value(1.0), seed=value(0)))
  monkeypatch.setattr(chat, "_CHUNK", value(3))
  loaded = init_from.Loaded(model=None, params=None, tokenizer=Tok(), mesh=None, rules=(), source=None)
  buf = io.StringIO()
  assert chat.stream_reply(loaded, [1, 2], fmt="text", out=buf) == "Hi there"
  assert buf.getvalue() == "Hi there\n"


def test_chat_with_tools_shows_each_call_and_output_as_it_happens(monkeypatch):
  """The engine's events are printed as they arrive: the words, "→ python: code", "← output"."""
  tok = ByteTokenizer()
  sp = tok.special_ids
  turn = ([*b"Let me run it."] + [sp["<|python_start|>"], *b"6*7", sp["<|python_end|>"]]
          + [sp["<|output_start|>"], *b"42", sp["<|output_end|>"]] + [*b" It is 42.", sp["<|im_end|>"]])
  events = [types.SimpleNamespace(new_tokens=[turn[i:i + 4]]) for i in range(0, len(turn), 4)]
  monkeypatch.setattr(chat.engine, "stream", lambda *a, **k: iter(events))
  value = lambda v: types.SimpleNamespace(value=v)
  monkeypatch.setattr(chat, "_M", types.SimpleNamespace(max_new_tokens=value(64), temperature=value(0.0),
                                                        top_k=value(0), top_p=value(1.0), seed=value(0)))
  monkeypatch.setattr(chat, "_CHUNK", value(4))
  loaded = init_from.Loaded(model=None, params=None, tokenizer=tok, mesh=None, rules=(), source=None)
  buf = io.StringIO()
  assert chat.stream_reply_with_tools(loaded, [1], {"python": None}, out=buf) == "Let me run it. It is 42."
  assert buf.getvalue() == "Let me run it.\n  → python: 6*7\n  ← 42\n It is 42.\n"


def test_chat_renders_the_shared_conversation_format():
  """The chat CLI's prompt is exactly lm.conversation's generation prompt, history included."""
  tok = ByteTokenizer()
  convo = chat.Conversation("chat", system="Be brief.")
  convo.turns = [("hi", "hello")]
  want = conversation.render_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                                     {"role": "assistant", "content": "hello"},
                                     {"role": "user", "content": "2+2?"}], tok).tolist()
  assert convo.render(tok, "2+2?") == want
  assert tok.decode(want).endswith("<|im_start|>user<|im_sep|>2+2?<|im_end|><|im_start|>assistant<|im_sep|>")
  assert chat.stop_ids(tok, "chat") == [tok.eos_id, tok.special_ids["<|im_end|>"]]


def test_chat_cli_text_format_for_tokenizers_without_chat_tokens(hf_folder):
  out = cli("experiments.chat", f"--hf_dir={hf_folder}", "--tokenizer=byte", "--prompt=hello",
            "--max_new_tokens=8", "--format=text")
  assert out.returncode == 0, out.stderr
  assert out.stdout.startswith("User: hello\nAssistant: ")
