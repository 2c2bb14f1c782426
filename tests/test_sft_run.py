"""experiments.sft as a user runs it: from a pretraining workdir, one-line errors, SIGKILL + exact resume."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.conftest import ROOT, env, pretrain_tiny_base, tiny_base_flags

BASE = tiny_base_flags(steps=10, log_every=5)
SFT = ["--config.train.seq_len=128", "--config.train.batch_size=8", "--config.train.steps=30",
       "--config.train.ckpt_every=10", "--config.train.eval_every=30", "--config.train.log_every=5",
       "--config.train.eval_batches=1", "--config.opt.warmup_steps=2", "--config.eval.examples=4",
       "--config.eval.max_new_tokens=8", "--config.eval.tasks=arithmetic", "--config.data.examples_per_task=50"]


def run(module, workdir, config, *extra, check=True):
  out = subprocess.run([sys.executable, "-m", module, f"--config={config}", f"--workdir={workdir}", *extra],
                       env=env(), cwd=ROOT, timeout=600, capture_output=True, text=True)
  if check:
    assert out.returncode == 0, out.stderr[-3000:]
  return out


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
  """A tiny byte-level base model (the byte tokenizer has the chat special tokens)."""
  rng = np.random.default_rng(0)
  words = ["one", "two", "plus", "is", "the", "sum", "of", "and", "three", "four"]
  return pretrain_tiny_base(tmp_path_factory.mktemp("base"),
                            "\n\n".join(" ".join(rng.choice(words, 40)) for _ in range(200)), BASE)


@pytest.fixture(scope="module")
def messages_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("chat") / "chat.jsonl"
  rng = np.random.default_rng(1)
  with open(path, "w") as f:
    for _ in range(120):
      a, b = (int(x) for x in rng.integers(0, 50, 2))
      f.write(json.dumps({"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                                       {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]}) + "\n")
  return path


def sft_args(base_run, messages_file, *extra):
  return [*SFT, f"--config.init_from.workdir={base_run}",
          f"--config.data.sources=messages:{messages_file}*1,arithmetic*1", *extra]


def final_state(workdir, step=30):
  return ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))


def test_sft_runs_from_a_pretraining_workdir_and_resumes_exactly(tmp_path, base_run, messages_file):
  args = sft_args(base_run, messages_file)
  ref = tmp_path / "ref"
  out = run("experiments.sft", ref, "configs/sft.py:tiny", *args)
  rows = [json.loads(l) for l in open(ref / "metrics.jsonl")]
  assert any("eval/format" in r for r in rows) and any("eval/arithmetic/accuracy" in r for r in rows)
  assert rows[-1]["step"] == 30 and os.path.exists(ref / "eval.jsonl")
  report = (ref / "report.md").read_text()
  assert "Held-out tasks" in report and "padding_fraction" in report

  killed = tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, "-m", "experiments.sft", "--config=configs/sft.py:tiny",
                           f"--workdir={killed}", *args], env=env(), cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not os.path.isdir(killed / "checkpoints" / "10") and time.time() < deadline and proc.poll() is None:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
  assert not os.path.isdir(killed / "checkpoints" / "30")
  out = run("experiments.sft", killed, "configs/sft.py:tiny", *args)
  assert "resumed from" in out.stdout
  import jax
  for x, y in zip(jax.tree.leaves(final_state(ref)), jax.tree.leaves(final_state(killed))):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("extra,needle", [
    (["--config.model.d_model=256"], "config.model.d_model=256 contradicts the init_from source"),
    (["--config.init_from.workdir=/no/such/run"], "config.init_from.workdir: no checkpoints"),
    (["--config.data.sources=messages:/no/such.jsonl*1"], "no such file '/no/such.jsonl'"),
    (["--config.data.sources=nope*1"], "unknown conversation source kind 'nope'"),
    (["--config.data.layout=zip"], "config.data.layout"),
    (["--config.eval.tasks=poetry"], "config.eval.tasks: unknown task 'poetry'"),
])
def test_user_errors_are_one_line_and_write_nothing(tmp_path, base_run, messages_file, extra, needle):
  out = run("experiments.sft", tmp_path / "sft", "configs/sft.py:tiny", *sft_args(base_run, messages_file), *extra,
            check=False)
  assert out.returncode == 2, out.stderr[-2000:]
  errors = [l for l in out.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and needle in errors[0], out.stderr[-2000:]
  assert not os.path.exists(tmp_path / "sft")


def test_malformed_jsonl_names_file_and_line(tmp_path, base_run):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                 '{"messages": [oops\n')
  out = run("experiments.sft", tmp_path / "sft", "configs/sft.py:tiny", *SFT,
            f"--config.init_from.workdir={base_run}", f"--config.data.sources=messages:{bad}*1", check=False)
  assert out.returncode == 2 and f"{bad}:2:" in out.stderr, out.stderr[-2000:]
