"""SFT and GRPO through launch/local.sh as 2 processes on loopback (2 CPU devices each) = 1 process of
4 devices: the same loss at every step, and the workdir written once (metrics, report, one
checkpoint per step with each process's data iterator)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT, pretrain_tiny_base
from tests.test_grpo_run import GRPO
from tests.test_sft_run import BASE

STEPS = 4
SFT = ["--config=configs/sft.py:tiny", "--config.train.seq_len=128", "--config.train.batch_size=8",
       f"--config.train.steps={STEPS}", "--config.train.ckpt_every=2", f"--config.train.eval_every={STEPS}",
       "--config.train.log_every=1", "--config.train.eval_batches=1", "--config.opt.warmup_steps=2",
       "--config.eval.examples=4", "--config.eval.max_new_tokens=8", "--config.eval.tasks=arithmetic",
       "--config.data.examples_per_task=50", "--config.data.sources=arithmetic*1"]


def launch(module, args, workdir, nproc):
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") or k == "JAX_COMPILATION_CACHE_DIR"}
  env.update(LM_VENV=sys.prefix, LM_SKIP_INSTALL="1", NPROC=str(nproc), DEVICES="4", TF_CPP_MIN_LOG_LEVEL="2",
             LOGS=f"{workdir}.logs")
  out = subprocess.run(["bash", os.path.join(ROOT, "launch", "local.sh"), module, *args, f"--workdir={workdir}"],
                       env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return [json.loads(l) for l in open(workdir / "metrics.jsonl")]


def one_and_two(module, args, tmp_path):
  """The metrics of the run as 1 process and as 2, after checking the 2-process workdir."""
  one = launch(module, args, tmp_path / "one", 1)
  two = launch(module, args, tmp_path / "two", 2)
  for rows in (one, two):  # one line per step and evaluation: process 1 wrote nothing
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, STEPS + 1))
  wd = tmp_path / "two"
  assert sorted(os.listdir(wd / "checkpoints")) == ["2", "4"]
  assert sorted(os.listdir(wd / "checkpoints" / "4" / "data")) == [
      "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]
  assert len(os.listdir(wd / "tensorboard")) == 1 and (wd / "report.md").exists()
  assert not (wd / ".lock").exists()
  return one, two


def assert_match(one, two, keys, **tol):
  for key in keys:
    a, b = [r[key] for r in one if key in r], [r[key] for r in two if key in r]
    assert a, key
    np.testing.assert_allclose(b, a, err_msg=key, **tol)


@pytest.mark.slow
def test_sft_on_two_processes_matches_one(tmp_path, byte_base):
  one, two = one_and_two("experiments.sft", [*SFT, f"--config.init_from.workdir={byte_base}"], tmp_path)
  assert [r["step"] for r in two if "val/loss" in r] == [0, STEPS]
  assert_match(one, two, ("train/loss", "train/grad_norm", "val/loss"), rtol=1e-5)
  # Greedy replies decoded on both hosts' rows and gathered: the same scores.
  assert_match(one, two, ("eval/format", "eval/arithmetic/accuracy"), rtol=0)
  assert len((tmp_path / "two" / "eval.jsonl").read_text().splitlines()) == 4


@pytest.fixture(scope="module")
def digits_base(tmp_path_factory):
  """test_grpo_run's base: digits, so one-digit sums are sometimes right (groups with a signal)."""
  rng = np.random.default_rng(0)
  return pretrain_tiny_base(tmp_path_factory.mktemp("base"),
                            "\n\n".join(" ".join(str(x) for x in rng.integers(0, 10, 60)) for _ in range(100)), BASE)


@pytest.mark.slow
def test_grpo_on_two_processes_matches_one(tmp_path, digits_base):
  args = ["--config=configs/grpo.py:tiny", *GRPO, f"--config.train.steps={STEPS}", f"--config.train.eval_every={STEPS}",
          "--config.train.log_every=1", f"--config.init_from.workdir={digits_base}"]
  one, two = one_and_two("experiments.grpo", args, tmp_path)
  # Sampled on both hosts' devices and gathered: the same rollouts, rewards and updates.
  assert_match(one, two, ("rollout/reward", "rollout/response_tokens", "train/grad_norm", "train/entropy",
                          "eval/pass@1", "eval/kl"), rtol=1e-5)
  assert_match(one, two, ("train/loss",), rtol=1e-5, atol=1e-6)  # ~0: advantages sum to 0 in each group
  assert any(r["train/grad_norm"] > 0 for r in one if "train/grad_norm" in r)  # a real update happened
  assert any(r["eval/kl"] > 0 for r in one if r["step"] == STEPS and "eval/kl" in r)
  assert sorted(p for p in os.listdir(tmp_path / "two" / "reference") if p.startswith("ocdbt.process")) == [
      "ocdbt.process_0", "ocdbt.process_1"]
