"""lm.cpu.malloc: which malloc tunables launch/local.sh starts Python with."""
import os
import subprocess
import sys

import pytest

from lm.cpu import malloc

glibc = pytest.mark.skipif(malloc.environment({}) is None, reason="not Linux/glibc")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@glibc
def test_sets_tunables_and_keeps_the_rest():
  env = malloc.environment({"PATH": "/bin", "XLA_FLAGS": "--x"})
  assert env["GLIBC_TUNABLES"] == malloc.TUNABLES
  assert env["PATH"] == "/bin" and env["XLA_FLAGS"] == "--x"


@glibc
def test_appends_to_other_tunables():
  env = malloc.environment({"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=512"})
  assert env["GLIBC_TUNABLES"] == "glibc.rtld.optional_static_tls=512:" + malloc.TUNABLES


@pytest.mark.parametrize("env", [
    {"LM_CPU_SPEEDUPS": "0"},                                     # all CPU speed-ups off
    {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"},               # user chose malloc settings
    {"LD_PRELOAD": "/usr/lib/libtcmalloc.so.4"},                  # another allocator
    {"LD_PRELOAD": "/opt/libjemalloc.so.2"},
])
def test_leaves_environment_alone(env):
  assert malloc.environment(env) is None


def test_never_on_an_accelerator_host():
  assert malloc.environment({}, accelerator=True) is None


def _exports(extra_env):
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LM_CPU_SPEEDUPS")}
  env.update(PYTHONPATH=ROOT, **extra_env)
  out = subprocess.run([sys.executable, "-m", "lm.cpu.malloc"], env=env, capture_output=True, text=True,
                       timeout=60)
  assert out.returncode == 0, out.stderr
  return out.stdout.strip()


@glibc
def test_module_prints_the_export_line_local_sh_evaluates():
  if malloc.has_accelerator():
    assert _exports({}) == ""
  else:
    assert _exports({}) == f"export GLIBC_TUNABLES={malloc.TUNABLES}"
  assert _exports({"LM_CPU_SPEEDUPS": "0"}) == ""


def test_local_sh_evaluates_it():
  script = open(os.path.join(ROOT, "launch", "local.sh")).read()
  assert "-m lm.cpu.malloc" in script
