"""Decode benchmark on tiny shapes: the JSON it reports, and the same tokens as transformers' generate."""
import numpy as np
import pytest

from configs import bench
from lm.bench import decode as bench_decode
from lm.bench import peer as peer_lib


def tiny(peer: bool):
  c = bench.get_config("decode")
  c.model.update(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=128, max_len=32)
  c.update(batch_size=2, prompt_len=8, new_tokens=16, steps=1, rounds=3, warmup_steps=0, peer=peer,
           cpu_devices=0, xla_cpu_flags="")
  return c


def test_reports_tokens_per_sec_and_rejects_short_max_len():
  out = bench_decode.run(tiny(peer=False))
  assert out["tokens_per_sec"] > 0 and out["new_tokens"] == 16 and out["batch_size"] == 2
  assert len(out["rounds"]) == 3 and "headline" not in out
  c = tiny(peer=False)
  c.model.max_len = 20
  with pytest.raises(ValueError, match="max_len"):
    bench_decode.run(c)


@pytest.mark.slow  # transformers' static-cache compile: ~35 s; greedy parity with transformers is also
# checked fast by tests/test_hf.py (same logits)
def test_transformers_side_uses_the_same_weights():
  pytest.importorskip("transformers")
  out = bench_decode.run(tiny(peer=True))
  assert out["headline"] == "speedup_vs_static_compiled"
  for mode, cache in (("static_compiled", "static"), ("default", "dynamic")):
    assert out[f"speedup_vs_{mode}"] == pytest.approx(sorted(r[f"ratio_vs_{mode}"] for r in out["rounds"])[1])
    assert out[f"transformers_{mode}_settings"]["cache"] == cache
    # Both greedy on identical weights: every row agrees on every token (checked, not only reported).
    assert out[f"greedy_agreement_{mode}"] == 16


def test_token_disagreement_is_refused():
  a = np.arange(12).reshape(2, 6)
  assert bench_decode.check_tokens(a, a.copy(), "default") == 6
  b = a.copy()
  b[1, 4] = -1
  with pytest.raises(peer_lib.NotSameWork, match=r"rows agree for \[6, 4\] of 6"):
    bench_decode.check_tokens(a, b, "default")


def test_a_model_transformers_cannot_run_gets_no_ratio():
  c = tiny(peer=True)
  c.model.update(positions="rotary", norm="layernorm", mlp="gelu")
  with pytest.raises(peer_lib.NotSameWork, match="transformers cannot run this model"):
    bench_decode.run(c)
