"""experiments.sft through launch/local.sh as 2 processes on loopback (2 CPU devices each) = 1 process
of 4 devices: the same loss at every step, and the workdir written once (metrics, report, one
checkpoint per step with each process's data iterator)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

STEPS = 4
SFT = ["--config=configs/sft.py:tiny", "--config.train.seq_len=128", "--config.train.batch_size=8",
       f"--config.train.steps={STEPS}", "--config.train.ckpt_every=2", f"--config.train.eval_every={STEPS}",
       "--config.train.log_every=1", "--config.train.eval_batches=1", "--config.opt.warmup_steps=2",
       "--config.eval.examples=4", "--config.eval.max_new_tokens=8", "--config.eval.tasks=arithmetic",
       "--config.data.examples_per_task=50", "--config.data.sources=arithmetic*1"]


def launch(workdir, base, nproc, tmp_path):
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") or k == "JAX_COMPILATION_CACHE_DIR"}
  env.update(LM_VENV=sys.prefix, LM_SKIP_INSTALL="1", NPROC=str(nproc), DEVICES="4", TF_CPP_MIN_LOG_LEVEL="2",
             LOGS=str(tmp_path / f"logs{nproc}"))
  out = subprocess.run(["bash", os.path.join(ROOT, "launch", "local.sh"), "experiments.sft", *SFT, f"--workdir={workdir}",
                        f"--config.init_from.workdir={base}"], env=env, capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return [json.loads(l) for l in open(workdir / "metrics.jsonl")]


@pytest.mark.slow
def test_sft_on_two_processes_matches_one(tmp_path, byte_base):
  one = launch(tmp_path / "one", byte_base, 1, tmp_path)
  two = launch(tmp_path / "two", byte_base, 2, tmp_path)
  for rows in (one, two):  # one line per step and evaluation: process 1 wrote nothing
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, STEPS + 1))
    assert [r["step"] for r in rows if "val/loss" in r] == [0, STEPS]
  for key in ("train/loss", "train/grad_norm", "val/loss"):
    np.testing.assert_allclose([r[key] for r in two if key in r], [r[key] for r in one if key in r],
                               rtol=1e-5, err_msg=key)
  for key in ("eval/format", "eval/arithmetic/accuracy"):  # greedy replies gathered from both hosts
    assert [r[key] for r in two if key in r] == [r[key] for r in one if key in r]
  wd = tmp_path / "two"
  assert sorted(os.listdir(wd / "checkpoints")) == ["2", "4"]
  assert sorted(os.listdir(wd / "checkpoints" / "4" / "data")) == [
      "commit_success.txt", "process_0-of-2.json", "process_1-of-2.json"]
  assert len(os.listdir(wd / "tensorboard")) == 1
  assert (wd / "report.md").exists() and len((wd / "eval.jsonl").read_text().splitlines()) == 4
  assert not (wd / ".lock").exists()
