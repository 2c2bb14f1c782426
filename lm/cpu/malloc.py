"""Keep glibc from handing XLA:CPU's per-step buffers back to the kernel.

XLA:CPU allocates each step's temporaries (~780 MB for the benchmark step)
afresh and frees them at the end. With glibc's defaults, blocks that large are
mmap'd and unmapped (and per-thread arenas shrink), so every step page-faults
its whole working set back in: ~200,000 minor faults and ~0.4 s of kernel time
per step on the CPU benchmark, about 20% of the step. One arena that never
mmaps and never trims keeps the pages: the faults go away after the first
steps, as with TCMalloc (which MaxText preloads).

The tunables must be in the environment when the process starts, so
`launch/local.sh` sets them before it starts Python, from

    python -m lm.cpu.malloc     # prints `export GLIBC_TUNABLES=...`, or nothing

Nothing is printed on a host with an accelerator (a GPU or TPU device node),
with LM_CPU_SPEEDUPS=0, when GLIBC_TUNABLES already names a malloc setting,
when another allocator is preloaded, or off glibc. Importing this module does
not import JAX.
"""
from __future__ import annotations

import glob
import os
import platform
import shlex

TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
            "glibc.malloc.trim_threshold=17179869184")
ACCELERATOR_DEVICES = ("/dev/nvidia[0-9]*", "/dev/accel[0-9]*", "/dev/vfio/[0-9]*", "/dev/kfd")
_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")


def has_accelerator() -> bool:
  return any(glob.glob(pattern) for pattern in ACCELERATOR_DEVICES)


def environment(env: dict[str, str], accelerator: bool = False) -> dict[str, str] | None:
  """The environment to start Python with, or None when nothing should change."""
  if accelerator or env.get("LM_CPU_SPEEDUPS", "1") == "0":
    return None
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return None
  if "glibc.malloc" in env.get("GLIBC_TUNABLES", ""):
    return None
  if any(a in env.get("LD_PRELOAD", "") for a in _ALLOCATORS):
    return None
  tunables = env.get("GLIBC_TUNABLES")
  return {**env, "GLIBC_TUNABLES": f"{tunables}:{TUNABLES}" if tunables else TUNABLES}


def describe() -> str:
  """What the running process uses, for benchmark reports."""
  if any(a in os.environ.get("LD_PRELOAD", "") for a in _ALLOCATORS):
    return os.path.basename(os.environ["LD_PRELOAD"].split(":")[0])
  if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
    return "glibc (one arena, no mmap, no trim)"
  return "glibc defaults"


if __name__ == "__main__":
  new = environment(dict(os.environ), has_accelerator())
  if new is not None:
    print(f"export GLIBC_TUNABLES={shlex.quote(new['GLIBC_TUNABLES'])}")
