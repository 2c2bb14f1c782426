"""Decode benchmark on tiny shapes: the JSON it reports, and same tokens as transformers' generate."""
import pytest

from configs import bench
from lm.bench import decode as bench_decode


def tiny(peer: bool):
  c = bench.get_config("decode")
  c.model.update(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=128, max_len=32)
  c.update(batch_size=2, prompt_len=8, new_tokens=16, steps=1, warmup_steps=0, peer=peer,
           cpu_devices=0, xla_cpu_flags="")
  return c


def test_reports_tokens_per_sec_and_rejects_short_max_len():
  out = bench_decode.run(tiny(peer=False))
  assert out["tokens_per_sec"] > 0 and out["new_tokens"] == 16 and out["batch_size"] == 2
  assert "speedup_vs_transformers" not in out
  c = tiny(peer=False)
  c.model.max_len = 20
  with pytest.raises(ValueError, match="max_len"):
    bench_decode.run(c)


def test_transformers_side_uses_the_same_weights():
  pytest.importorskip("transformers")
  out = bench_decode.run(tiny(peer=True))
  assert out["speedup_vs_transformers"] == pytest.approx(
      out["tokens_per_sec"] / out["transformers_tokens_per_sec"])
  # Both greedy on identical weights: every row agrees on every token.
  assert out["greedy_agreement_prefix_mean"] == 16
