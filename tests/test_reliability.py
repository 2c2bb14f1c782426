"""No run loses good work: NaN guard, preemption, failed saves, corrupt checkpoints, one workdir one job."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from lm import checkpoint as ckpt_lib
from lm import loop
from lm.errors import UserError
from tests.conftest import ROOT, env, snapshot

SMALL = ["--config.model.d_model=64", "--config.model.n_layers=2", "--config.model.n_heads=2",
         "--config.model.n_kv_heads=2", "--config.model.d_ff=128", "--config.model.max_len=64",
         "--config.train.seq_len=64", "--config.train.batch_size=8", "--config.train.steps=20",
         "--config.train.ckpt_every=10", "--config.train.eval_every=1000", "--config.train.log_every=5",
         "--config.train.eval_batches=1", "--config.sample.max_new_tokens=4", "--config.opt.warmup_steps=2"]


def cmd(workdir, corpus, *extra):
  return [sys.executable, "-m", "experiments.pretrain", "--config=configs/pretrain.py:tiny",
          f"--workdir={workdir}", *SMALL, f"--config.data.path={corpus}", *extra]


def run(workdir, corpus, *extra):
  return subprocess.run(cmd(workdir, corpus, *extra), env=env(), cwd=ROOT, timeout=600,
                        capture_output=True, text=True)


def error_line(out) -> str:
  lines = [l for l in out.stderr.splitlines() if l.startswith("error:")]
  assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
  return lines[0]


def params_of(workdir, step):
  state = ocp.PyTreeCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), "state"))
  return state["params"]


def same_tree(a, b) -> bool:
  import jax
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  rng = np.random.default_rng(0)
  words = ["the", "king", "queen", "castle", "sword", "rides", "north", "to", "and", "of", "a", "river"]
  path = tmp_path_factory.mktemp("corpus") / "text.txt"
  path.write_text("\n\n".join(" ".join(rng.choice(words, 60)) + "." for _ in range(400)))
  return str(path)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, corpus):
  """A 20-step run with checkpoints at 10 and 20, copied by the tests that change it."""
  wd = tmp_path_factory.mktemp("finished") / "run"
  out = run(wd, corpus)
  assert out.returncode == 0, out.stderr[-3000:]
  return wd


def copy_of(finished, tmp_path):
  import shutil
  wd = tmp_path / "run"
  shutil.copytree(finished, wd)
  return wd


# ------------------------------------------------------------------ NaN / Inf guard

def test_nonfinite_stop_keeps_the_last_checkpoint(finished, corpus, tmp_path):
  """A learning rate of 1e30 from step 21 (its update overflows): the run stops at once, exit 2,
  one line; checkpoints 10 and 20 survive retention; metrics.jsonl stays strict JSON."""
  wd = copy_of(finished, tmp_path)
  before = snapshot(wd / "checkpoints")
  out = run(wd, corpus, "--config.train.steps=40", "--config.opt.lr=1e30")
  line = error_line(out)
  assert "step 21: non-finite" in line and "checkpoints/20 intact" in line and "nonfinite='skip'" in line
  assert snapshot(wd / "checkpoints") == before
  for l in open(wd / "metrics.jsonl"):
    json.loads(l, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_nonfinite_skip_counts_and_leaves_parameters(finished, corpus, tmp_path):
  wd = copy_of(finished, tmp_path)
  out = run(wd, corpus, "--config.train.steps=30", "--config.opt.lr=1e30", "--config.train.nonfinite=skip")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "step 21: non-finite" in out.stderr + out.stdout and "update skipped (10 so far" in out.stderr + out.stdout
  rows = [json.loads(l) for l in open(wd / "metrics.jsonl")]
  assert [r["train/skipped_steps"] for r in rows if r.get("step") == 30 and "train/skipped_steps" in r] == [10]
  assert same_tree(params_of(wd, 30), params_of(wd, 20))  # every update was skipped


def test_train_step_guard_on_device(tiny_model_config):
  """The step itself: a non-finite gradient changes nothing but the step counter."""
  import jax
  from configs import base
  from lm import losses, sharding
  cfg = tiny_model_config
  opt = base.optimizer_config(lr=1e-3)
  opt.warmup_steps = 0
  mesh = sharding.make_mesh(base.mesh_config())
  stage = loop.build_stage(cfg, opt, 10, mesh, base.SHARDING_RULES, losses.next_token, micro_batch=8, seq_len=16)
  state = stage.init(0)
  before = jax.device_get(state)
  tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (8, 17)).astype(np.int32)
  batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "loss_mask": np.full((8, 16), np.nan, np.float32)}
  state, metrics = stage.train_step(state, sharding.host_batch_to_global(batch, mesh), jax.random.key(0))
  assert int(metrics["nonfinite"]) == 1 and int(state.step) == 1
  assert same_tree(jax.device_get(state.params), before.params)
  assert same_tree(jax.device_get(state.opt_state), before.opt_state)
  batch["loss_mask"] = np.ones((8, 16), np.float32)
  state, metrics = stage.train_step(state, sharding.host_batch_to_global(batch, mesh), jax.random.key(0))
  assert int(metrics["nonfinite"]) == 0 and not same_tree(jax.device_get(state.params), before.params)


# ------------------------------------------------------------------ resume, finished runs, model mismatch

def test_corrupt_newest_checkpoint_is_skipped(finished, corpus, tmp_path):
  wd = copy_of(finished, tmp_path)
  state_dir = wd / "checkpoints" / "20" / "state"
  for root, _, files in os.walk(state_dir):  # a half-copied checkpoint: its array files emptied
    for name in files:
      if name not in ("_METADATA", "_CHECKPOINT_METADATA", "manifest.ocdbt"):
        open(os.path.join(root, name), "wb").close()
  out = run(wd, corpus, "--config.train.steps=30")
  assert out.returncode == 0, out.stderr[-3000:]
  text = out.stdout + out.stderr
  assert f"warning: skipping checkpoint {wd}/checkpoints/20, it does not load" in text
  assert f"resumed from {wd}/checkpoints/10" in text
  assert os.path.isdir(wd / "checkpoints" / "30")


def test_no_loadable_checkpoint_is_one_line(finished, corpus, tmp_path):
  wd = copy_of(finished, tmp_path)
  for step in ("10", "20"):
    for root, _, files in os.walk(wd / "checkpoints" / step / "state"):
      for name in files:
        open(os.path.join(root, name), "wb").close()
  before = snapshot(wd)
  line = error_line(run(wd, corpus, "--config.train.steps=30"))
  assert f"no checkpoint under {wd}/checkpoints loads (steps [10, 20])" in line
  assert snapshot(wd) == before


def test_rerunning_a_finished_run_keeps_its_report(finished, corpus, tmp_path):
  wd = copy_of(finished, tmp_path)
  before = snapshot(wd)
  out = run(wd, corpus)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "already finished at step 20" in out.stdout
  assert snapshot(wd) == before


def test_resume_with_another_model_changes_nothing(finished, corpus, tmp_path):
  wd = copy_of(finished, tmp_path)
  before = snapshot(wd)
  out = run(wd, corpus, "--config.train.steps=30", "--config.model.d_ff=96")
  line = error_line(out)
  assert "the model differs (model.d_ff: checkpoint 128, config 96)" in line
  assert snapshot(wd) == before


def test_resume_on_shards_of_another_tokenizer(tmp_path):
  """Two BPE tokenizers of the same vocabulary size: a run on shards of one does not resume on
  shards of the other (same vocab, different ids), and nothing is changed."""
  from lm import tokenizer as tokenizer_lib
  from lm.data import shards as shards_lib
  from lm.prep import synthetic
  docs = list(synthetic.clean_documents())
  folders = []
  for i, part in enumerate((docs[::2], docs[1::2])):
    tok = tokenizer_lib.train_sentencepiece(part, 512)
    folder = tmp_path / f"shards{i}"
    for split, rows in (("train", part[:-4]), ("val", part[-4:])):
      writer = shards_lib.ShardWriter(str(folder / split), tok)
      for d in rows:
        writer.add(tok.encode(d))
      writer.close()
    folders.append(folder)
  wd = tmp_path / "run"
  out = run(wd, folders[0], "--config.train.steps=10", "--config.data.tokenizer=auto")
  assert out.returncode == 0, out.stderr[-3000:]
  before = snapshot(wd)
  line = error_line(run(wd, folders[1], "--config.train.steps=20", "--config.data.tokenizer=auto"))
  assert "tokenizer mismatch" in line and f"{wd}/checkpoints/10" in line
  assert snapshot(wd) == before


# ------------------------------------------------------------------ failed saves

def test_unwritable_checkpoint_folder_fails_in_seconds(corpus, tmp_path):
  wd = tmp_path / "run"
  wd.mkdir()
  (wd / "checkpoints").write_text("a file where the checkpoint folder should be")
  t = time.time()
  line = error_line(run(wd, corpus))
  assert "checkpoint folder" in line and "cannot write there" in line and time.time() - t < 60


def test_full_disk_is_one_line(tmp_path, monkeypatch):
  import shutil
  from collections import namedtuple
  usage = namedtuple("usage", "total used free")
  monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 10**6, 10**6))
  with pytest.raises(ckpt_lib.SaveFailed, match=r"0.00 GB free, a checkpoint needs 0.01 GB"):
    ckpt_lib.preflight(str(tmp_path / "checkpoints"), 10**7)
  assert not (tmp_path / "checkpoints").exists()


def test_a_failed_background_save_surfaces_at_the_next_step(tmp_path, monkeypatch):
  ck = ckpt_lib.Checkpointer(str(tmp_path / "checkpoints"), keep=2, every=10)
  def boom():
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(ck.manager, "check_for_errors", boom)
  with pytest.raises(ckpt_lib.SaveFailed, match="checkpoint save to .* failed: .*No space left on device"):
    ck.check_errors()


# ------------------------------------------------------------------ one workdir, one job

def write_lock(wd, pid, host=None):
  wd.mkdir(parents=True, exist_ok=True)
  (wd / loop.LOCK).write_text(json.dumps({"host": host or socket.gethostname(), "pid": pid, "started": "x"}))


def test_workdir_in_use_is_one_line(tmp_path):
  sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
  try:
    write_lock(tmp_path / "run", sleeper.pid)
    with pytest.raises(UserError, match=rf"workdir .* is in use by pid {sleeper.pid} on {socket.gethostname()}"):
      loop.lock_workdir(str(tmp_path / "run"))
    write_lock(tmp_path / "other", 1234, host="another-host")  # a pid elsewhere cannot be checked: refuse
    with pytest.raises(UserError, match="in use by pid 1234 on another-host"):
      loop.lock_workdir(str(tmp_path / "other"))
  finally:
    sleeper.kill()
    sleeper.wait()


def test_stale_lock_is_taken_over(tmp_path, capsys):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  write_lock(tmp_path / "run", dead.pid)
  loop.lock_workdir(str(tmp_path / "run"))
  assert f"taking over the lock of {tmp_path / 'run'}: pid {dead.pid}" in capsys.readouterr().out
  owner = json.loads((tmp_path / "run" / loop.LOCK).read_text())
  assert owner["pid"] == os.getpid()
  loop._unlock(str(tmp_path / "run" / loop.LOCK), owner)
  assert not (tmp_path / "run" / loop.LOCK).exists()


# ------------------------------------------------------------------ preemption

def start(wd, corpus, *extra):
  return subprocess.Popen(cmd(wd, corpus, "--config.train.steps=100000", "--config.train.ckpt_every=100000", *extra),
                          env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_training(wd, proc, timeout=300):
  t = time.time()
  while time.time() - t < timeout:
    if os.path.exists(wd / "metrics.jsonl") and any("train/loss" in l for l in open(wd / "metrics.jsonl")):
      return
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    time.sleep(0.2)
  pytest.fail("training did not start")


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 0),  # SIGINT takes the same path: slow
                                      pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)])
def test_signal_saves_and_exits(corpus, tmp_path, sig, code):
  wd = tmp_path / "run"
  proc = start(wd, corpus)
  wait_for_training(wd, proc)
  # Meanwhile a second job on the same workdir is refused with one line.
  second = run(wd, corpus)
  assert f"is in use by pid {proc.pid}" in error_line(second)
  proc.send_signal(sig)
  stdout, stderr = proc.communicate(timeout=300)
  assert proc.returncode == code, stderr[-3000:]
  assert "Traceback" not in stderr
  step = int(stdout.split(": stopped after step ")[1].split(",")[0])
  assert os.path.isdir(wd / "checkpoints" / str(step)) and step >= 5
  assert not (wd / loop.LOCK).exists()


def test_second_signal_exits_at_once(monkeypatch):
  """Two signals sent together coalesce into one (POSIX), so the handler is driven directly."""
  exits = []
  monkeypatch.setattr(os, "_exit", exits.append)
  signals = loop._Signals()
  signals._handle(signal.SIGTERM, None)
  assert signals.received == signal.SIGTERM and signals.stop_at(7) and exits == []
  signals._handle(signal.SIGTERM, None)
  assert exits == [128 + signal.SIGTERM]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["pretrain", "sft", "grpo"])
def test_kill_loop_ends_bit_identical(tmp_path, stage):
  """launch/kill_loop.py with 3 kills (the README's figures come from 20 per stage)."""
  from launch import kill_loop
  assert kill_loop.main([f"--stage={stage}", "--kills=3", "--seed=1", f"--workdir={tmp_path}"]) == 0
  text = (tmp_path / stage / "kill_loop.md").read_text()
  assert '"bit_identical": true' in text and '"kills": 3' in text
