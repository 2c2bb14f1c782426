"""Performance accounting: the measured matmul peak, MFU, and memory.

MFU here is achieved model FLOP/s over the peak matmul FLOP/s *measured on the
same device in the same run* (not a datasheet number), so it stays honest on
shared or throttled machines and on CPUs without a published peak.
"""
from __future__ import annotations

import resource
import time

import jax
import jax.numpy as jnp


def measure_matmul_peak(dtype: str = "float32", n: int | None = None, repeats: int = 5) -> float:
  """Best FLOP/s of a square n×n matmul chain on the first local device."""
  dev = jax.local_devices()[0]
  if n is None:
    n = 1024 if dev.platform == "cpu" else 8192
  dt = jnp.dtype(dtype)
  a = jax.device_put(jnp.ones((n, n), dt) / n, dev)
  b = jax.device_put(jnp.ones((n, n), dt), dev)
  inner = 4 if dev.platform == "cpu" else 16

  @jax.jit
  def chain(a, b):
    def body(_, x):
      return (x @ b).astype(dt)
    return jax.lax.fori_loop(0, inner, body, a)

  chain(a, b).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    chain(a, b).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 * inner / best


def mfu(flops_per_token: float, tokens_per_sec: float, peak_flops: float, num_devices: int) -> float:
  return flops_per_token * tokens_per_sec / (peak_flops * num_devices)


def memory_stats() -> dict:
  """Accelerator peak bytes in use where the backend reports it; host peak RSS always."""
  out = {"host_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}
  stats = jax.local_devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    out["device_peak_gb"] = stats["peak_bytes_in_use"] / 1e9
  return out
