"""One clear line for every user error: a table of bad inputs, each run as a user runs it.

Every row is a command line (`python -m experiments.<x> ...` as a subprocess, one CPU device)
with an input a user can get wrong, and the text its error line must contain. For each row:

  * exit status 2;
  * stderr holds exactly one line starting with `error:`, and no `Traceback`;
  * the line contains the expected text (the config key, or the file and line, and the fix);
  * nothing changed: every file under the row's tmp folder (data files, fake model folders, the
    prepared workdirs) is snapshotted as (path, size, mtime_ns, sha256) before and compared
    after; no file appeared, none changed or vanished;
  * so the run's own workdir (`<tmp>/run`, absent before) is afterwards either still absent or
    an empty folder. Decision: an empty folder is allowed (pretraining creates its workdir
    before it reads the data, so a bad data file leaves it empty); a file in it never is: no
    config.json, no data cache, no checkpoint.

Each error comes before any compilation, so a row costs about one interpreter + JAX start-up.

`python -m tests.test_bad_inputs` runs every row and prints the markdown table
| input or fault | exact one-line message | with the messages the code gives now
(tmp paths shown as <tmp>).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.conftest import ROOT, env, snapshot

PRETRAIN = ["experiments.pretrain", "--config=configs/pretrain.py:tiny", "--workdir={tmp}/run"]
SFT_BASE = ["experiments.sft", "--config=configs/sft.py:tiny", "--workdir={tmp}/run"]
# A valid init_from (a config.json + chat tokenizer, no weights: nothing gets that far) and no
# synthetic tasks, so SFT reaches the conversation files.
SFT = SFT_BASE + ["--config.init_from.hf_dir={tmp}/hf", "--config.eval.tasks=",
                  "--config.train.seq_len=64"]
SAMPLE = ["experiments.sample", "--hf_dir={tmp}/hf", "--prompt=hi"]
CHAT = ["experiments.chat", "--hf_dir={tmp}/hf", "--prompt=hi"]

# (id, input or fault, command, text the one error line must contain)
ROWS = [
    # config
    ("unknown_key", "config: unknown key `--config.train.nope=1`",
     PRETRAIN + ["--config.train.nope=1"], "unknown config key 'config.train.nope' (every key"),
    ("misspelled_key", "config: misspelled key `--config.train.setps=10`",
     PRETRAIN + ["--config.train.setps=10"],
     "unknown config key 'config.train.setps' (did you mean 'steps'?"),
    ("wrong_type", "config: wrong type `--config.train.steps=ten`",
     PRETRAIN + ["--config.train.steps=ten"], "config.train.steps"),
    ("negative_lr", "config: negative learning rate `--config.opt.lr=-0.1` (SFT)",
     SFT + ["--config.data.sources=messages:{tmp}/good.jsonl", "--config.opt.lr=-0.1"],
     "config.opt.lr must be a positive number, got -0.1"),
    ("nan_lr", "config: `--config.opt.lr=nan`",
     PRETRAIN + ["--config.opt.lr=nan"], "config.opt.lr must be a positive number, got nan"),
    ("nonfinite_policy", "config: `--config.train.nonfinite=ignore`",
     PRETRAIN + ["--config.train.nonfinite=ignore"],
     "config.train.nonfinite must be 'stop' or 'skip', got 'ignore'"),
    ("zero_steps", "config: `--config.train.steps=0`",
     PRETRAIN + ["--config.train.steps=0"], "config.train.steps must be positive, got 0"),
    ("seq_len_over_max_len", "config: `--config.train.seq_len` > `config.model.max_len`",
     PRETRAIN + ["--config.train.seq_len=4096"], "config.train.seq_len=4096 exceeds config.model.max_len"),
    ("batch_vs_grad_accum", "config: batch_size 6 not divisible by grad_accum 4",
     PRETRAIN + ["--config.train.batch_size=6", "--config.train.grad_accum=4"], "config.train.batch_size"),
    ("unknown_preset", "config: unknown preset `--config=configs/pretrain.py:huge`",
     ["experiments.pretrain", "--config=configs/pretrain.py:huge", "--workdir={tmp}/run"],
     "configs/pretrain.py: unknown arg 'huge'"),
    # pretraining data files
    ("data_missing", "data: `config.data.path` does not exist",
     PRETRAIN + ["--config.data.path={tmp}/nope.jsonl"], "config.data.path: no such file or folder"),
    ("jsonl_bad_line", "data: JSONL whose line 3 is not JSON",
     PRETRAIN + ["--config.data.path={tmp}/bad_line3.jsonl"], "bad_line3.jsonl:3: not valid JSON"),
    ("jsonl_no_field", "data: JSONL line 2 without the `text` field",
     PRETRAIN + ["--config.data.path={tmp}/no_text.jsonl"], "no_text.jsonl:2: no 'text' field"),
    ("data_empty", "data: an empty file",
     PRETRAIN + ["--config.data.path={tmp}/empty.txt"], "empty.txt: no documents"),
    ("parquet_no_field", "data: a Parquet file without the `text` column",
     PRETRAIN + ["--config.data.path={tmp}/no_text.parquet"], "no_text.parquet: no 'text' column"),
    ("dir_no_files", "data: a folder with no usable files",
     PRETRAIN + ["--config.data.path={tmp}/nodata"], "nodata' has no .txt/.jsonl"),
    # SFT conversation files
    ("messages_bad_role", "SFT: messages JSONL with a bad role on line 2",
     SFT + ["--config.data.sources=messages:{tmp}/bad_role.jsonl"], "bad_role.jsonl:2: "),
    ("sharegpt_not_list", "SFT: ShareGPT JSON that is not a list",
     SFT + ["--config.data.sources=sharegpt:{tmp}/sharegpt.json"],
     "sharegpt.json:1: expected a JSON array of conversations"),
    ("unknown_source_kind", "SFT: unknown source kind `chatml:...`",
     SFT + ["--config.data.sources=chatml:{tmp}/good.jsonl"], "unknown conversation source kind 'chatml'"),
    # init_from
    ("init_no_checkpoints", "init_from: a workdir with no checkpoints",
     SFT_BASE + ["--config.init_from.workdir={tmp}/emptyrun"], "config.init_from.workdir: no checkpoints in"),
    ("init_hf_no_config", "init_from: a Hugging Face folder without config.json",
     SFT_BASE + ["--config.init_from.hf_dir={tmp}/hf_noconfig"],
     "config.init_from.hf_dir: no config.json in"),
    ("init_hf_bad_config", "init_from: a Hugging Face folder whose config.json is not JSON",
     SFT_BASE + ["--config.init_from.hf_dir={tmp}/hf_badconfig"], "config.json:3: not valid JSON"),
    ("init_contradiction", "init_from: `--config.model.d_model=64` against a source of width 32",
     SFT + ["--config.data.sources=messages:{tmp}/good.jsonl", "--config.model.d_model=64"],
     "config.model.d_model=64 contradicts the init_from source"),
    # sampling / chat
    ("sample_temperature", "sample: `--temperature=-1`",
     SAMPLE + ["--temperature=-1"], "--temperature must be >= 0"),
    ("chat_top_k", "chat: `--top_k=-5`", CHAT + ["--top_k=-5"], "--top_k must be >= 0"),
    ("sample_top_p", "sample: `--top_p=1.5`", SAMPLE + ["--top_p=1.5"], "--top_p must be in (0, 1]"),
    ("sample_max_new_tokens", "sample: `--max_new_tokens=0`",
     SAMPLE + ["--max_new_tokens=0"], "--max_new_tokens must be at least 1"),
    ("chat_max_new_tokens", "chat: `--max_new_tokens=-3`",
     CHAT + ["--max_new_tokens=-3"], "--max_new_tokens must be at least 1"),
    ("sample_prompt_file", "sample: `--few_shot_file` that does not exist",
     SAMPLE + ["--few_shot_file={tmp}/nope.txt"], "--few_shot_file: no such file"),
    ("sample_no_checkpoint", "sample: `--workdir` with no checkpoint",
     ["experiments.sample", "--workdir={tmp}/emptyrun", "--prompt=hi"], "--workdir: no checkpoints in"),
    ("chat_no_checkpoint", "chat: `--workdir` with no checkpoint",
     ["experiments.chat", "--workdir={tmp}/emptyrun"], "--workdir: no checkpoints in"),
    # tokenizer
    ("tokenizer_missing", "tokenizer: `config.data.tokenizer` path that does not exist",
     PRETRAIN + ["--config.data.tokenizer={tmp}/nope.model"], "tokenizer: no such file"),
    ("vocab_too_small", "tokenizer: `config.model.vocab_size` smaller than the tokenizer's",
     PRETRAIN + ["--config.model.vocab_size=64"], "config.model.vocab_size=64 is smaller than the tokenizer's"),
]


def _hf_config(**over) -> dict:
  return dict({"model_type": "gpt2", "vocab_size": 320, "n_positions": 128, "n_embd": 32, "n_layer": 2,
               "n_head": 2, "bos_token_id": 0, "eos_token_id": 1}, **over)


def _chat_tokenizer(path: str) -> None:
  """A tiny tokenizer.json with the conversation format's special tokens."""
  from tokenizers import Tokenizer, models, pre_tokenizers
  from lm.tokenizer import SPECIAL_TOKENS
  vocab = {c: i for i, c in enumerate(sorted(set("abcdefghijklmnopqrstuvwxyz ?!.,0123456789")))}
  vocab["[UNK]"] = len(vocab)
  tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
  tok.add_special_tokens(list(SPECIAL_TOKENS))
  tok.save(path)


def make_inputs(tmp: str) -> None:
  """Every input file the rows name, under `tmp` (each row gets a fresh one)."""
  def write(name, text):
    path = os.path.join(tmp, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(text)

  write("bad_line3.jsonl", '{"text": "one"}\n{"text": "two"}\n{"text": "three"\n{"text": "four"}\n')
  write("no_text.jsonl", '{"text": "one"}\n{"body": "two"}\n')
  write("empty.txt", "")
  write("nodata/readme.md", "no data here\n")
  import pyarrow as pa
  import pyarrow.parquet as pq
  pq.write_table(pa.table({"body": ["one", "two"]}), os.path.join(tmp, "no_text.parquet"))
  good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
  bad = {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "hello"}]}
  write("good.jsonl", json.dumps(good) + "\n")
  write("bad_role.jsonl", json.dumps(good) + "\n" + json.dumps(bad) + "\n")
  write("sharegpt.json", json.dumps({"conversations": [{"from": "human", "value": "hi"}]}))
  write("hf/config.json", json.dumps(_hf_config()))
  _chat_tokenizer(os.path.join(tmp, "hf", "tokenizer.json"))
  write("hf_noconfig/tokenizer.json", "{}")
  write("hf_badconfig/config.json", '{\n  "model_type": "gpt2",\n  "n_embd": 32,,\n}\n')
  write("emptyrun/notes.txt", "a workdir without checkpoints\n")


def run_row(args: list[str], tmp: str) -> subprocess.CompletedProcess:
  cmd = [sys.executable, "-m"] + [a.format(tmp=tmp) for a in args]
  return subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=ROOT, timeout=120)


def error_lines(stderr: str) -> list[str]:
  return [l for l in stderr.splitlines() if l.startswith("error:")]


# Start-up (importing JAX, Flax, Orbax, Grain: ~3 of a row's ~5 s) dominates. By default the rows
# run in children forked from one server process that imported those libraries once (not the
# experiments, not their flags): each child runs `python -m experiments.<x> ...` as runpy does,
# with its own stdout/stderr, and its exit status is the row's. LM_BAD_INPUT_SUBPROCESS=1 runs
# each row as a plain `python -m` subprocess instead (as `python -m tests.test_bad_inputs` does).
PLAIN_SUBPROCESS = os.environ.get("LM_BAD_INPUT_SUBPROCESS") == "1"
PRELOAD = ("numpy", "jax", "jax.numpy", "flax.linen", "optax", "orbax.checkpoint", "grain", "ml_collections",
           "ml_collections.config_flags", "absl.app", "absl.flags", "tokenizers", "pyarrow.parquet",
           "experiments", "lm.model", "lm.train", "lm.sharding", "lm.checkpoint")


def serve() -> None:
  """Fork server: reads one JSON [module, args, out_dir] per stdin line, answers the exit status."""
  import atexit
  import importlib
  import runpy
  import signal
  import traceback
  for name in PRELOAD:
    importlib.import_module(name)
  print("ready", flush=True)
  for line in sys.stdin:
    module, args, out_dir = json.loads(line)
    pid = os.fork()
    if pid == 0:
      code = 1
      try:
        signal.alarm(120)
        for fd, name in ((1, "stdout"), (2, "stderr")):
          os.dup2(os.open(os.path.join(out_dir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.argv = [module] + args
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
      except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
      except BaseException:  # noqa: BLE001 - as the interpreter would: traceback, status 1
        traceback.print_exc()
      finally:
        atexit._run_exitfuncs()  # as an interpreter exit does (a workdir lock is released there)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps(os.waitstatus_to_exitcode(status)), flush=True)


class Server:
  def __init__(self):
    self.proc = subprocess.Popen([sys.executable, "-c", "from tests.test_bad_inputs import serve; serve()"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env(),
                                 cwd=ROOT)
    assert self.proc.stdout.readline().strip() == "ready"

  def run(self, args: list[str], tmp: str) -> subprocess.CompletedProcess:
    out_dir = tempfile.mkdtemp(prefix="bad_input_out_")  # outside tmp: the snapshot stays exact
    argv = [a.format(tmp=tmp) for a in args]
    self.proc.stdin.write(json.dumps([argv[0], argv[1:], out_dir]) + "\n")
    self.proc.stdin.flush()
    code = json.loads(self.proc.stdout.readline())
    read = lambda name: open(os.path.join(out_dir, name)).read()
    done = subprocess.CompletedProcess(argv, code, read("stdout"), read("stderr"))
    shutil.rmtree(out_dir)
    return done

  def close(self):
    self.proc.stdin.close()
    self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def results(request, tmp_path_factory):
  selected = {item.callspec.id for item in request.session.items
              if item.originalname == "test_bad_input_is_one_line_exit_2_nothing_written"}
  server = None if PLAIN_SUBPROCESS else Server()
  done = {}
  for i, _, args, _ in ROWS:
    if i in selected:
      tmp = str(tmp_path_factory.mktemp(i))
      make_inputs(tmp)
      before = snapshot(tmp)
      out = run_row(args, tmp) if server is None else server.run(args, tmp)
      done[i] = out, before, snapshot(tmp)
  if server is not None:
    server.close()
  return done


@pytest.mark.parametrize("row", [pytest.param(i, id=i) for i, *_ in ROWS])
def test_bad_input_is_one_line_exit_2_nothing_written(results, row):
  expected = {i: e for i, _, _, e in ROWS}[row]
  out, before, after = results[row]
  assert out.returncode == 2, out.stderr[-3000:]
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  lines = error_lines(out.stderr)
  assert len(lines) == 1, out.stderr[-3000:]
  assert expected in lines[0], lines[0]
  assert "\\'" not in lines[0] and "\\n" not in lines[0], lines[0]
  written = sorted(set(after) - set(before))
  assert not written, f"the failed run wrote {written}"  # the workdir (<tmp>/run) above all
  assert after == before, "a file that existed before the run changed or vanished"


def test_verbose_shows_the_traceback(tmp_path):
  tmp = str(tmp_path)
  make_inputs(tmp)
  out = run_row(PRETRAIN + ["--config.data.path={tmp}/bad_line3.jsonl", "--verbose"], tmp)
  assert out.returncode == 2 and "Traceback" in out.stderr, out.stderr[-3000:]
  assert len(error_lines(out.stderr)) == 1


def test_every_row_is_distinct():
  assert len({i for i, *_ in ROWS}) == len(ROWS) >= 22


def table() -> str:
  """| input or fault | exact one-line message | for every row, as the code answers now."""
  lines = ["| input or fault | exact one-line message |", "|---|---|"]
  for _, what, args, _ in ROWS:
    with tempfile.TemporaryDirectory() as tmp:
      make_inputs(tmp)
      out = run_row(args, tmp)
      found = error_lines(out.stderr)
      message = found[0] if len(found) == 1 else f"(exit {out.returncode}, {len(found)} error lines)"
      message = message.replace(os.path.realpath(tmp), "<tmp>").replace(tmp, "<tmp>")
    lines.append(f"| {what.replace('|', chr(92) + '|')} | `{message.replace('|', chr(92) + '|')}` |")
  return "\n".join(lines)


if __name__ == "__main__":
  print(table())
