"""experiments.grpo as a user runs it: from an earlier stage's workdir, its metrics and report, one-line
errors, and a run killed with SIGKILL that resumes bit-identical to an uninterrupted one."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.conftest import ROOT, env, pretrain_tiny_base
from tests.test_sft_run import BASE, final_state, run

GRPO = ["--config.rl.prompts_per_step=2", "--config.rl.group=4", "--config.train.batch_size=8",
        "--config.rl.max_new_tokens=16", "--config.train.seq_len=80", "--config.train.steps=6",
        "--config.train.ckpt_every=2", "--config.train.eval_every=3", "--config.eval.examples=2",
        "--config.eval.samples=2", "--config.eval.max_new_tokens=8", "--config.data.train_prompts=40",
        "--config.opt.lr=1e-3", "--config.opt.warmup_steps=1", "--config.tasks.arithmetic.add_digits=(1, 1)"]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
  """A tiny byte-level model (the byte tokenizer has the chat special tokens) to start RL from."""
  rng = np.random.default_rng(0)
  # Single digits: the last number of a completion is then right about 1 time in 20 on one-digit sums,
  # enough for groups with a reward signal (and real updates) in a few iterations.
  return pretrain_tiny_base(tmp_path_factory.mktemp("base"),
                            "\n\n".join(" ".join(str(x) for x in rng.integers(0, 10, 60)) for _ in range(100)), BASE)


def args(base_run, *extra):
  return [*GRPO, f"--config.init_from.workdir={base_run}", *extra]


def test_grpo_runs_reports_and_resumes_exactly(tmp_path, base_run):
  ref = tmp_path / "ref"
  run("experiments.grpo", ref, "configs/grpo.py:tiny", *args(base_run))
  rows = [json.loads(l) for l in open(ref / "metrics.jsonl")]
  train = [r for r in rows if "rollout/reward" in r]
  assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
  for key in ("train/loss", "train/entropy", "rollout/truncated", "rollout/no_signal_groups",
              "perf/rollout_share"):
    assert all(key in r for r in train), key
  assert any(r["rollout/no_signal_groups"] < 1 for r in train)  # some updates are real
  assert not any("train/kl" in r for r in train)  # kl_coef 0: no reference forward per iteration
  evals = [r for r in rows if "eval/pass@1" in r]
  assert [r["step"] for r in evals] == [0, 3, 6] and all("eval/pass@2" in r for r in evals)
  # KL measured on the held-out samples instead: 0 before the first update, then positive (lr 1e-3).
  assert evals[0]["eval/kl"] == pytest.approx(0.0, abs=1e-6) and evals[-1]["eval/kl"] > 0
  report = (ref / "report.md").read_text()
  assert "Held-out evaluation over training" in report and "rollout" in report
  assert (ref / "grpo_curves.png").exists() and (ref / "reference").is_dir()

  killed = tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, "-m", "experiments.grpo", "--config=configs/grpo.py:tiny",
                           f"--workdir={killed}", *args(base_run)], env=env(), cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  while not os.path.isdir(killed / "checkpoints" / "2") and time.time() < deadline and proc.poll() is None:
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
  assert not os.path.isdir(killed / "checkpoints" / "6")
  out = run("experiments.grpo", killed, "configs/grpo.py:tiny", *args(base_run))
  assert "resumed from" in out.stdout
  for x, y in zip(jax.tree.leaves(final_state(ref, 6)), jax.tree.leaves(final_state(killed, 6))):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("extra,needle", [
    (["--config.train.batch_size=6"], "config.train.batch_size=6 must equal rl.prompts_per_step"),
    (["--config.rl.aggregation=median"], "config.rl.aggregation: 'median' is not one of"),
    (["--config.train.seq_len=16"], "config.rl.max_new_tokens=16 leaves no room"),
    (["--config.train.seq_len=40"], "training prompts are longer than"),
    (["--config.rl.wrong_penalty=-1"], "config.rl.wrong_penalty=-1.0 must be ≥ 0"),
    (["--config.rl.wrong_penalty=1", "--config.reward.kind=model"], "config.reward.kind='model' does not use it"),
])
def test_user_errors_are_one_line_and_write_nothing(tmp_path, base_run, extra, needle):
  wd = tmp_path / "wd"
  out = run("experiments.grpo", wd, "configs/grpo.py:tiny", *args(base_run, *extra), check=False)
  assert out.returncode == 2, out.stderr[-2000:]
  errors = [l for l in out.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and needle in errors[0], out.stderr[-2000:]
  assert not os.path.exists(wd)
