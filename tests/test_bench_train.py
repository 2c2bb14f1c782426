"""Train-step benchmark on tiny shapes: the figures it reports and the peer side by side."""
import os

import numpy as np
import pytest

from configs import bench
from lm.bench import train_step as bench_train


def tiny(peer: bool):
  """Batch 8: one row per virtual device of the test mesh."""
  c = bench.get_config("train_step")
  c.model.update(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=128, max_len=32)
  c.update(batch_size=8, seq_len=32, steps=2, warmup_steps=1, rounds=2, peer=peer)
  return c


def test_reports_throughput_and_mfu():
  out = bench_train.run(tiny(peer=False))
  for key in ("tokens_per_sec", "step_ms", "mfu", "compile_s"):
    assert out[key] > 0, key
  assert out["tokens_per_sec"] == pytest.approx(256 / out["step_ms"] * 1e3)
  assert "speedup_vs_peer" not in out


def test_peer_side_by_side():
  pytest.importorskip("torch")
  c = tiny(peer=True)
  if not os.path.exists(os.path.join(bench_train.ROOT, c.peer_script)):
    pytest.skip(f"peer script {c.peer_script} not found")
  out = bench_train.run(c)
  assert len(out["speedup_per_round"]) == 2 and out["peer_tokens_per_sec"] > 0
  assert out["speedup_vs_peer"] == pytest.approx(float(np.median(out["speedup_per_round"])))
  assert out["peer_mfu"] > 0 and out["peer_step_ms"] == pytest.approx(256 / out["peer_tokens_per_sec"] * 1e3)
