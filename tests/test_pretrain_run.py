"""The pretraining entry point as a user runs it: errors, SIGKILL + resume, the tiny run."""
import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests.conftest import ROOT, env

SMALL = ["--config.model.d_model=64", "--config.model.n_layers=2", "--config.model.n_heads=2",
         "--config.model.n_kv_heads=2", "--config.model.d_ff=128", "--config.model.max_len=64",
         "--config.train.seq_len=64", "--config.train.batch_size=8", "--config.train.steps=40",
         "--config.train.ckpt_every=10", "--config.train.eval_every=40", "--config.train.log_every=5",
         "--config.train.eval_batches=2", "--config.sample.max_new_tokens=8", "--config.opt.warmup_steps=5"]


def cmd(workdir, *extra, config="configs/pretrain.py:tiny"):
  return [sys.executable, "-m", "experiments.pretrain", f"--config={config}", f"--workdir={workdir}", *extra]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
  rng = np.random.default_rng(0)
  words = ["the", "king", "queen", "castle", "sword", "rides", "north", "to", "and", "of", "a", "river"]
  path = tmp_path_factory.mktemp("corpus") / "text.txt"
  paras = [" ".join(rng.choice(words, 60)) + "." for _ in range(400)]
  path.write_text("\n\n".join(paras))
  return str(path)


@pytest.mark.parametrize("override,message", [
    ("--config.train.nope=1", "unknown config key 'config.train.nope'"),
    ("--config.train.batch_size=6", "config.train.batch_size"),
    ("--config.mesh.data=4", "config.mesh"),
    ("--config.data.path=/no/such/file.txt", "config.data.path"),
    ("--config.model.n_kv_heads=3", "config.model.n_kv_heads"),
])
def test_bad_config_is_one_line_and_nonzero(tmp_path, override, message):
  extra = [override] + (["--config.train.grad_accum=4"] if "batch_size" in override else [])
  out = subprocess.run(cmd(tmp_path / "run", *extra), capture_output=True, text=True, env=env(),
                       cwd=ROOT, timeout=120)
  assert out.returncode == 2, out.stderr[-2000:]
  last = [l for l in out.stderr.splitlines() if l.startswith("error:")]
  assert len(last) == 1 and message in last[0], out.stderr[-2000:]
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def final_state(workdir, step=40):
  return ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))


def losses(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def test_sigkill_then_resume_matches_uninterrupted(tmp_path, corpus_file):
  args = SMALL + [f"--config.data.path={corpus_file}"]
  ref = tmp_path / "ref"
  subprocess.run(cmd(ref, *args), check=True, env=env(), cwd=ROOT, timeout=300, capture_output=True)

  run = tmp_path / "killed"
  proc = subprocess.Popen(cmd(run, *args), env=env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + 240
  while not os.path.isdir(run / "checkpoints" / "20") and time.time() < deadline and proc.poll() is None:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
  assert not os.path.isdir(run / "checkpoints" / "40")

  out = subprocess.run(cmd(run, *args), env=env(), cwd=ROOT, timeout=300, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "resumed from" in out.stdout
  a, b = final_state(ref), final_state(run)
  for x, y in zip(jax_leaves(a), jax_leaves(b)):
    np.testing.assert_array_equal(x, y)
  ref_losses, run_losses = losses(ref), losses(run)
  assert ref_losses[40] == run_losses[40] and ref_losses[25] == run_losses[25]
  for name in ("loss.png", "report.md", "config.json"):
    assert os.path.exists(run / name)


def jax_leaves(tree):
  import jax
  return jax.tree.leaves(tree)


def test_tiny_default_run_starts_learning(tmp_path):
  """The README's smallest run (pretrain.py:tiny), cut to 60 steps (the fast guard beside the slow run below):
  held-out loss on the embedded corpus falls well below its start."""
  out = subprocess.run(cmd(tmp_path / "tiny", "--config.train.steps=60", "--config.train.eval_every=60",
                           "--config.train.eval_batches=2", "--config.train.ckpt_every=60",
                           "--config.sample.max_new_tokens=8"),
                       env=env(), cwd=ROOT, timeout=600, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(l) for l in open(tmp_path / "tiny" / "metrics.jsonl")]
  val = {r["step"]: r["val/loss"] for r in rows if "val/loss" in r}
  train = [r["train/loss"] for r in rows if "train/loss" in r]
  print(f"val loss {val}, train loss {train}")
  assert sorted(val) == [0, 60]
  assert val[60] < 0.6 * val[0] and train[-1] < train[0]
  copy = [r["val/copy_gain"] for r in rows if "val/loss" in r]  # lm/probes.py, logged at every evaluation
  assert len(copy) == 2 and all(math.isfinite(c) for c in copy) and abs(copy[0]) < 0.5  # untrained: no copying


@pytest.mark.slow
def test_tiny_default_run_learns(tmp_path):
  """The README's smallest run: validation loss falls clearly within 5 minutes on 2 cores."""
  t = time.time()
  out = subprocess.run(cmd(tmp_path / "tiny"), env=env(), cwd=ROOT, timeout=600, capture_output=True, text=True)
  elapsed = time.time() - t
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [json.loads(l) for l in open(tmp_path / "tiny" / "metrics.jsonl")]
  val = [r["val/loss"] for r in rows if "val/loss" in r]
  print(f"elapsed {elapsed:.0f}s, val loss {val}")
  assert val[-1] < 0.5 * val[0] and val[-1] < 2.0
  assert elapsed < 300


def test_metric_writer_does_not_import_torch(tmp_path):
  """TensorBoard events are written without PyTorch (tensorboardX imports it when installed: seconds
  per stage), and a process that already uses torch keeps it."""
  code = ("import sys; from lm.metrics import MetricWriter; w = MetricWriter(sys.argv[1]); "
          "w.write(1, {'train/loss': 2.5}); w.close(); print('torch' in sys.modules); "
          "import torch; print(torch.ones(1).item())")
  out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env(), capture_output=True,
                       text=True, timeout=120, check=True).stdout.split()
  assert out == ["False", "1.0"]
  events = os.listdir(tmp_path / "tensorboard")
  assert len(events) == 1 and (tmp_path / "tensorboard" / events[0]).stat().st_size > 0
  assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "train/loss": 2.5}
