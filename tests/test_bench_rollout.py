"""Rollout benchmark on tiny shapes: B×G rows of exactly new_tokens on both sides, one distribution, the JSON."""
import numpy as np
import pytest

from configs import bench
from lm.bench import peer as peer_lib
from lm.bench import rollout as bench_rollout


def tiny(peer: bool, modes=("default",)):
  c = bench.get_config("rollout")
  c.model.update(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=128, max_len=32)
  c.update(batch_size=2, samples_per_prompt=3, prompt_len=8, new_tokens=16, steps=1, rounds=3, warmup_steps=0,
           peer=peer, peer_modes=modes, cpu_devices=0, xla_cpu_flags="")
  return c


@pytest.mark.slow  # both sides' compile and 3 rounds: ~20 s; run with the benchmark
def test_group_rollout_beside_transformers_sampling():
  pytest.importorskip("transformers")
  out = bench_rollout.run(tiny(peer=True))
  assert out["rows"] == 6 and out["new_tokens"] == 16 and len(out["rounds"]) == 3
  assert out["tokens_per_sec"] > 0 and out["transformers_tokens_per_sec"] > 0
  assert out["transformers_mode"] == "default"
  assert out["speedup_vs_transformers"] == pytest.approx(sorted(r["ratio_vs_default"] for r in out["rounds"])[1])
  settings = out["transformers_default_settings"]
  assert settings["do_sample"] and settings["top_k"] == 0 and settings["num_return_sequences"] == 3
  # Same weights, same distribution: both sides' samples score alike under our model.
  assert out["logprob_gap_default"] <= 0.05


def test_unequal_work_is_refused():
  bench_rollout.check_rows(np.zeros((6, 16)), 6, 16, "ours", np.full(6, 16))
  with pytest.raises(peer_lib.NotSameWork, match=r"shape \(6, 15\)"):
    bench_rollout.check_rows(np.zeros((6, 15)), 6, 16, "transformers")
  with pytest.raises(peer_lib.NotSameWork, match=r"rows of \[3\] tokens"):
    bench_rollout.check_rows(np.zeros((6, 16)), 6, 16, "ours", [16, 16, 3, 16, 16, 16])
  assert bench_rollout.check_distribution((-4.80, 0.01), (-4.82, 0.01), 0.05, "default") == pytest.approx(0.02)
  with pytest.raises(peer_lib.NotSameWork, match="not the same distribution"):  # e.g. top-k 50 on one side
    bench_rollout.check_distribution((-4.80, 0.01), (-4.10, 0.01), 0.05, "default")
