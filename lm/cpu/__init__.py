"""Optional speed-ups for running on CPUs; the core (`lm/`) never imports this package.

What is here, each measured on the project's 2-core CPU machine (README, Benchmarks):

  attention.py        attention 'einsum' (causal-blocked, hand-written backward) and
                      'cpu_kernel' (fused C++ kernel, attention_cpu.cc, built on first
                      use by build.py into ~/.cache/lm_kernels)
  matmul.py           weight matmul 'copy_transpose' (weight gradients on XLA:CPU's fast path)
  malloc.py           glibc malloc tunables, set by launch/local.sh on hosts without accelerators

`register()` puts the first two into the core's registry (`lm.ops`) under their
names; entry points (`experiments/__init__.py`) and the test suite call it. Each
implementation checks the backend when traced and runs the core path on
accelerators, so registering never changes what a TPU/GPU run does.

One switch turns everything here off: LM_CPU_SPEEDUPS=0 (nothing registered, no
kernel build, no malloc tuning); configs that name these implementations then run
the core's with a warning.
"""
from __future__ import annotations

import os

SWITCH = "LM_CPU_SPEEDUPS"


def enabled() -> bool:
  return os.environ.get(SWITCH, "1") != "0"


def register() -> bool:
  """Registers the CPU implementations in `lm.ops`; False (and nothing registered) when switched off."""
  if not enabled():
    return False
  from lm import ops
  from lm.cpu import attention, matmul
  ops.register_attention("einsum", attention.einsum_attention, lambda dtype: "einsum")
  ops.register_attention("cpu_kernel", attention.cpu_kernel_attention,
                         lambda dtype: attention.resolved("cpu_kernel", dtype))
  ops.register_matmul("copy_transpose", matmul.copy_transpose)
  return True
