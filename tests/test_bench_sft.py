"""SFT-step benchmark on tiny shapes: SFT beside pretraining, medians, padding of both layouts."""
import numpy as np
import pytest

from configs import bench
from lm.bench import sft_step
from tests.conftest import CPU_SPEEDUPS


def test_sft_beside_pretraining():
  c = bench.get_config("sft_step")
  c.model.update(d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, d_ff=64, max_len=256)
  c.update(batch_size=8, seq_len=256, rounds=3, steps=2, warmup_steps=1)
  if not CPU_SPEEDUPS:
    c.model.attention = "xla"
  out = sft_step.run(c)
  assert out["sft_over_pretrain"] == pytest.approx(float(np.median(out["ratio_per_round"])))
  assert len(out["ratio_per_round"]) == 3 and out["attention"] == c.model.attention
  pad = out["padding_fraction"]
  assert 0 <= pad["pack"] < pad["pad"] < 1 and 0 <= out["sft_timed_padding_fraction"] < 1
  assert out["machine"]["cores_used"] >= 1
