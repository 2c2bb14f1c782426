"""Keep glibc from handing XLA:CPU's per-step buffers back to the kernel.

XLA:CPU allocates each step's temporaries (~780 MB for the benchmark step)
afresh and frees them at the end. With glibc's defaults, blocks that large are
mmap'd and unmapped (and per-thread arenas shrink), so every step page-faults
its whole working set back in: ~200,000 minor faults and ~0.4 s of kernel time
per step on the CPU benchmark, about 20% of the step. One arena that never
mmaps and never trims keeps the pages: the faults go away after the first
steps, as with TCMalloc (which MaxText preloads).

The tunables must be in the environment when the process starts, so
`python -m experiments.<name>` re-executes itself once with them set (see
experiments/__init__.py). Opt out with LM_MALLOC_TUNING=0; nothing is changed
when GLIBC_TUNABLES already names a malloc setting, when another allocator is
preloaded, or off glibc.
"""
from __future__ import annotations

import os
import platform
import sys

TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
            "glibc.malloc.trim_threshold=17179869184")


def environment(env: dict[str, str]) -> dict[str, str] | None:
  """The environment to re-execute with, or None when nothing should change."""
  if env.get("LM_MALLOC_TUNING", "1") == "0":
    return None
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return None
  if "glibc.malloc" in env.get("GLIBC_TUNABLES", ""):
    return None
  if any(a in env.get("LD_PRELOAD", "") for a in ("tcmalloc", "jemalloc", "mimalloc")):
    return None
  tunables = env.get("GLIBC_TUNABLES")
  return {**env, "GLIBC_TUNABLES": f"{tunables}:{TUNABLES}" if tunables else TUNABLES}


def reexec_if_needed() -> None:
  """Replace this process by the same command line with the tunables set (no-op if not needed)."""
  env = environment(dict(os.environ))
  if env is not None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def describe() -> str:
  """What the running process uses, for benchmark reports."""
  if any(a in os.environ.get("LD_PRELOAD", "") for a in ("tcmalloc", "jemalloc", "mimalloc")):
    return os.path.basename(os.environ["LD_PRELOAD"].split(":")[0])
  if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
    return "glibc (one arena, no mmap, no trim)"
  return "glibc defaults"
