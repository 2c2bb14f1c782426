"""Train-step benchmark on tiny shapes: figures, the peer side by side from the same weights, and the guard."""
import pytest

from configs import bench
from lm.bench import peer as peer_lib
from tests.conftest import CPU_SPEEDUPS, needs_cpu_speedups
from lm.bench import train_step as bench_train
from lm.errors import UserError


def tiny(peer: bool, modes=("compiled", "eager")):
  """Batch 8: one row per virtual device of the test mesh."""
  c = bench.get_config("train_step")
  c.model.update(vocab_size=128, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=128, max_len=32)
  c.update(batch_size=8, seq_len=32, steps=2, warmup_steps=3, rounds=3, peer=peer, peer_modes=modes)
  if not CPU_SPEEDUPS:  # LM_CPU_SPEEDUPS=0: what is configured must be what runs
    c.model.update(attention="xla", weight_grad="xla")
  return c


def test_reports_throughput_and_mfu():
  out = bench_train.run(tiny(peer=False))
  for key in ("tokens_per_sec", "step_ms", "mfu", "compile_s", "measured_matmul_peak_gflops"):
    assert out[key] > 0, key
  assert out["tokens_per_sec"] == pytest.approx(256 / out["step_ms"] * 1e3)
  assert len(out["rounds"]) == 3 and "headline" not in out
  assert out["machine"]["cores_used"] >= 1 and "jax" in out["machine"]["versions"]


@pytest.mark.slow  # torch.compile of the peer: ~40 s; the guards below stay fast
def test_peer_side_by_side_from_the_same_weights():
  pytest.importorskip("torch")
  out = bench_train.run(tiny(peer=True))
  assert out["headline"] == "speedup_vs_compiled"
  for mode in ("compiled", "eager"):
    rounds = [r[f"ratio_vs_{mode}"] for r in out["rounds"]]
    assert out[f"speedup_vs_{mode}"] == pytest.approx(sorted(rounds)[1])  # the median of 3
    assert out[f"peer_{mode}_tokens_per_sec"] == pytest.approx(sorted(r[f"{mode}_tokens_per_sec"] for r in out["rounds"])[1])
    assert out[f"peer_{mode}_mfu"] > 0
    settings = out[f"peer_{mode}_settings"]
    assert settings["mode"] == mode and settings["torch_threads"] == peer_lib.used_cores()
  assert "fused=True" in out["peer_compiled_settings"]["optimizer"]
  assert "fused=False" in out["peer_eager_settings"]["optimizer"]


@pytest.mark.parametrize("key,value,names", [
    ("model.dtype", "bfloat16", "model.dtype"), ("model.n_kv_heads", 2, "not GPT-2 style"),
    ("model.tie_embeddings", False, "tie_embeddings"), ("opt.schedule", "cosine", "opt.schedule"),
    ("model.positions", "rotary", "not GPT-2 style")])
def test_refuses_a_ratio_when_the_sides_differ(key, value, names):
  c = tiny(peer=True)
  section, field = key.split(".")
  c[section][field] = value
  with pytest.raises(peer_lib.NotSameWork, match=names):
    bench_train.run(c)


def test_loss_check_catches_different_work():
  """Settings the config guard cannot see (a different optimizer inside the peer, say) show in the losses."""
  bench_train.check_losses([4.85, 4.70, 4.55], [4.851, 4.701, 4.551], "compiled")
  with pytest.raises(peer_lib.NotSameWork, match="warm-up losses differ"):
    bench_train.check_losses([4.85, 4.70, 4.55], [4.85, 4.80, 4.75], "compiled")


def test_fails_when_the_configured_attention_does_not_run():
  needs_cpu_speedups()
  c = tiny(peer=False)
  c.model.attention = "einsum"
  c.model.dtype = "bfloat16"  # the kernel is float32-only: 'cpu_kernel' would not run, einsum does
  assert bench_train.run(c)["attention"] == "einsum"
  c.model.attention = "cpu_kernel"
  with pytest.raises(UserError, match="attention='cpu_kernel' but this process runs 'einsum"):
    bench_train.run(c)


@pytest.mark.parametrize("info,per_cycle", [
    ({"vendor_id": "GenuineIntel", "flags": "fma avx2 avx512f"}, 64),
    ({"vendor_id": "AuthenticAMD", "cpu family": "25", "flags": "fma avx2 avx512f"}, 32),  # Zen 4
    ({"vendor_id": "AuthenticAMD", "cpu family": "26", "flags": "fma avx2 avx512f"}, 64),  # Zen 5
    ({"vendor_id": "GenuineIntel", "flags": "fma avx2"}, 32), ({"flags": "sse2"}, 16)])
def test_nominal_peak_per_cycle(info, per_cycle):
  assert peer_lib.fp32_flops_per_cycle(info)[0] == per_cycle
