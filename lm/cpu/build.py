"""Builds, loads and registers the C++ CPU kernels (XLA FFI custom calls).

The sources sit beside this file. On first use they are compiled with the
system C++ compiler (`$CXX`, else `c++`) for this CPU (`-march=native`) against
the FFI headers shipped in jaxlib, into a cache directory keyed by the source,
jaxlib version, compiler, flags and CPU (`$LM_KERNEL_CACHE`, default
`~/.cache/lm_kernels`). `$LM_KERNEL_CFLAGS` appends flags, e.g.
`-march=x86-64-v3` for one build shared by hosts of different CPU generations.
Where no compiler is found or the build fails, `unavailable_reason()` says why
and callers use their pure-JAX path (with a logged reason); the tests fail on a
build error and skip only without a compiler.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jaxlib

_SOURCE = Path(__file__).with_name("attention_cpu.cc")
_TARGETS = {"lm_causal_attention_fwd": "LmCausalAttentionFwd",
            "lm_causal_attention_bwd": "LmCausalAttentionBwd"}
_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fno-math-errno")


def _cpu_id() -> str:
  try:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    return "\n".join(sorted({l for l in lines if l.startswith(("model name", "flags"))}))
  except OSError:
    return platform.processor() or platform.machine()


def _flags() -> list[str]:
  return [*_FLAGS, *os.environ.get("LM_KERNEL_CFLAGS", "").split()]


class NoCompiler(RuntimeError):
  """No C++ compiler on this machine: the kernels are unavailable, which is not a bug."""


class BuildError(RuntimeError):
  """The compiler is there and the build failed: a bug in the source or the flags."""


def compiler() -> str | None:
  """Path of the C++ compiler builds use (`$CXX`, else `c++`), or None."""
  return shutil.which(os.environ.get("CXX", "c++"))


def build(source: Path = _SOURCE, cache: Path | None = None) -> Path:
  """The shared library of `source`, compiled once per (source, jaxlib, compiler, flags, CPU)."""
  cxx = compiler()
  if cxx is None:
    raise NoCompiler(f"no C++ compiler ({os.environ.get('CXX', 'c++')!r} not on PATH)")
  key = hashlib.sha256(b"\0".join([source.read_bytes(), jaxlib.__version__.encode(), cxx.encode(),
                                   " ".join(_flags()).encode(), _cpu_id().encode()])).hexdigest()[:16]
  if cache is None:
    cache = Path(os.environ.get("LM_KERNEL_CACHE", Path.home() / ".cache" / "lm_kernels"))
  lib = cache / f"{source.stem}-{key}.so"
  if lib.exists():
    return lib
  cache.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=cache) as tmp:  # build aside, then rename: atomic
    out = Path(tmp) / lib.name
    cmd = [cxx, *_flags(), f"-I{jax.ffi.include_dir()}", str(source), "-o", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
      raise BuildError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    os.replace(out, lib)
  return lib


@functools.cache
def _load() -> str | None:
  """Registers the FFI targets; returns None on success, else why not."""
  from lm import cpu
  if not cpu.enabled():
    return f"CPU speed-ups switched off ({cpu.SWITCH}=0)"
  try:
    lib = ctypes.cdll.LoadLibrary(str(build()))
  except (RuntimeError, OSError) as e:
    return f"could not build {_SOURCE.name}: {e}"
  for name, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
  return None


def unavailable_reason() -> str | None:
  """None once the kernels are registered (building them on first call), else why they are not."""
  return _load()
