"""What every benchmark shares: the peer child process, the machine it ran on, one statistic.

  with PeerProcess(["train", "--weights", d, ...], threads=n) as peer:
    peer.ready["settings"]           # what the peer ran with (mode, threads, versions)
    peer.run(10)["times"]            # 10 timed steps, run while our side waits

Rules the benchmarks follow (issue: "measurements you can trust"):
- Sides alternate in rounds, one at a time, so neither steals the other's cores,
  and neighbours in time see the same machine. Each side's figure and each ratio
  is the median of its per-round values (`medians`).
- The peer runs the way its users run it, and once more the simple way for
  reference; its settings, thread counts, the CPU model and library versions go
  into the JSON (`machine`).
- A ratio is printed only when both sides did the same work; otherwise the
  benchmark stops with `NotSameWork` naming what differs.
"""
from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from typing import Callable

import numpy as np

from lm import model as model_lib
from lm import ops
from lm.errors import UserError

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_peer.py")


class NotSameWork(UserError):
  """The two sides of a comparison would not do the same work: no ratio is printed."""


class PeerError(RuntimeError):
  pass


def used_cores() -> int:
  """CPU cores this process may run on (its affinity), which both sides' thread pools use."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def peer_env() -> dict:
  """The peer's environment as its users have it: without our malloc tunables (lm/cpu/malloc.py)."""
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MALLOC_ARENA_MAX")}
  env.pop("PYTHONPATH", None)
  return env


class PeerProcess:
  """A torch_peer.py child: set up and warmed up on entry, then `run(n)` per round."""

  def __init__(self, args: list[str], threads: int, timeout_s: float = 1800):
    self.cmd = [sys.executable, SCRIPT, *args, "--threads", str(threads)]
    self.timeout_s = timeout_s
    self.proc: subprocess.Popen | None = None
    self.ready: dict = {}

  def __enter__(self) -> "PeerProcess":
    self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=peer_env())
    self.ready = self._read()
    return self

  def __exit__(self, *exc) -> None:
    if self.proc is not None:
      self.proc.stdin.close()
      try:
        self.proc.wait(timeout=60)
      except subprocess.TimeoutExpired:
        self.proc.kill()
      self.proc.stdout.close()
      self.proc.stderr.close()

  def _read(self) -> dict:
    line = self.proc.stdout.readline()
    if not line:
      err = self.proc.stderr.read().strip().splitlines()
      raise PeerError(f"peer {' '.join(self.cmd[2:4])} exited ({self.proc.wait()}): "
                      + (err[-1] if err else "no output"))
    reply = json.loads(line)
    if "error" in reply:
      raise PeerError(reply["error"])
    return reply

  def run(self, n: int) -> dict:
    self.proc.stdin.write(f"run {n}\n")
    self.proc.stdin.flush()
    return self._read()


def check_ran_as_configured(cfg) -> str:
  """What attention runs; a configured implementation that would not run is an error, not a footnote."""
  ran = ops.describe_attention(cfg.attention, model_lib.DTYPES[cfg.dtype])
  if ran != cfg.attention:
    raise UserError(f"config.model.attention={cfg.attention!r} but this process runs {ran!r}: "
                    "fix that, or configure what runs")
  if ops.describe_matmul(cfg.weight_grad) != cfg.weight_grad:
    raise UserError(f"config.model.weight_grad={cfg.weight_grad!r} is not registered in this process "
                    f"(runs {ops.describe_matmul(cfg.weight_grad)!r}): enable lm/cpu or configure 'xla'")
  return ran


def alternate(rounds: int, ours: Callable[[], float], peers: dict[str, Callable[[], float]]) -> list[dict]:
  """`rounds` rounds, each side one after the other; every callable times its share of a round and
  returns tokens/s. → per-round rows {ours_tokens_per_sec, <mode>_tokens_per_sec, ratio_vs_<mode>}."""
  rows = []
  for r in range(rounds):
    row = {"ours_tokens_per_sec": ours()}
    for mode, run in peers.items():
      row[f"{mode}_tokens_per_sec"] = run()
      row[f"ratio_vs_{mode}"] = row["ours_tokens_per_sec"] / row[f"{mode}_tokens_per_sec"]
    rows.append(row)
    print(json.dumps({"round": r, **{k: round(v, 3) for k, v in row.items()}}), flush=True)
  return rows


def medians(rounds: list[dict]) -> dict:
  """{key: median over rounds} for every numeric key of the per-round records."""
  keys = [k for k in rounds[0] if isinstance(rounds[0][k], (int, float))]
  return {k: float(np.median([r[k] for r in rounds])) for k in keys}


def _cpuinfo() -> dict:
  try:
    with open("/proc/cpuinfo") as f:
      text = f.read()
  except OSError:
    return {}
  first = text.split("\n\n")[0]
  return dict((k.strip(), v.strip()) for k, _, v in (l.partition(":") for l in first.splitlines()) if k.strip())


def _base_ghz(info: dict) -> tuple[float | None, str]:
  m = re.search(r"@\s*([\d.]+)\s*GHz", info.get("model name", ""))
  if m:
    return float(m.group(1)), "model name"
  for path in ("/sys/devices/system/cpu/cpu0/cpufreq/base_frequency",
               "/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq"):
    try:
      with open(path) as f:
        return int(f.read()) / 1e6, path
    except (OSError, ValueError):
      pass
  if "cpu MHz" in info:
    return float(info["cpu MHz"]) / 1e3, "cpu MHz (current)"
  return None, "unknown"


def fp32_flops_per_cycle(info: dict) -> tuple[int, str]:
  """Nominal fp32 FLOPs per cycle per core from the ISA flags: 2 FMA pipes of the widest vector.
  AMD before Zen 5 (cpu family 26) runs AVX-512 on 256-bit pipes, so it counts as AVX2 there."""
  flags = set(info.get("flags", "").split())
  amd = "AMD" in info.get("vendor_id", "") or "AMD" in info.get("model name", "")
  try:
    family = int(info.get("cpu family", "0"))
  except ValueError:
    family = 0
  if "avx512f" in flags and (not amd or family >= 26):
    return 64, "AVX-512, 2 FMA units × 16 fp32 × 2" + (" (Zen 5: 512-bit pipes)" if amd else "")
  if "fma" in flags and "avx2" in flags:
    return 32, "AVX2 FMA, 2 units × 8 fp32 × 2" + (" (AVX-512 on 256-bit pipes)" if "avx512f" in flags else "")
  return 16, "SSE, 2 units × 4 fp32 × 2 (no FMA)"


def machine() -> dict:
  """The CPU (model, cores used, nominal fp32 peak), Python and the libraries on either side."""
  info = _cpuinfo()
  cores = used_cores()
  ghz, ghz_source = _base_ghz(info)
  per_cycle, isa = fp32_flops_per_cycle(info)
  versions = {}
  for lib in ("jax", "jaxlib", "flax", "optax", "torch", "transformers"):
    try:
      versions[lib] = metadata.version(lib)
    except metadata.PackageNotFoundError:
      pass
  return {"cpu": info.get("model name", platform.processor() or platform.machine()),
          "cpu_family_model": f"{info.get('vendor_id', '?')} family {info.get('cpu family', '?')} model {info.get('model', '?')}",
          "cores_used": cores, "logical_cpus": os.cpu_count(), "base_ghz": ghz, "base_ghz_from": ghz_source,
          "nominal_fp32_peak_gflops": ghz * per_cycle * cores if ghz else None,
          "nominal_peak_assumes": f"{isa} × {cores} cores × {ghz} GHz",
          "python": platform.python_version(), "versions": versions}
