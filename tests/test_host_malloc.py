"""lm.host_malloc: which environment `python -m experiments.*` re-executes with."""
import os
import subprocess
import sys

import pytest

from lm import host_malloc

glibc = pytest.mark.skipif(host_malloc.environment({}) is None, reason="not Linux/glibc")


@glibc
def test_sets_tunables_and_keeps_the_rest():
  env = host_malloc.environment({"PATH": "/bin", "XLA_FLAGS": "--x"})
  assert env["GLIBC_TUNABLES"] == host_malloc.TUNABLES
  assert env["PATH"] == "/bin" and env["XLA_FLAGS"] == "--x"


@glibc
def test_appends_to_other_tunables():
  env = host_malloc.environment({"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=512"})
  assert env["GLIBC_TUNABLES"] == "glibc.rtld.optional_static_tls=512:" + host_malloc.TUNABLES


@pytest.mark.parametrize("env", [
    {"LM_MALLOC_TUNING": "0"},                                    # opted out
    {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"},               # the user's own malloc settings win
    {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"},  # another allocator
    {"LD_PRELOAD": "/opt/libjemalloc.so.2"},
])
def test_leaves_environment_alone(env):
  assert host_malloc.environment(env) is None


@glibc
def test_experiments_package_reexecutes_with_tunables():
  """Importing `experiments` for `python -m` re-executes the same command line once, tunables set."""
  code = ("import os, sys; sys.argv = ['-m']; import experiments; "
          "print(os.environ.get('GLIBC_TUNABLES'), os.environ.get('PROBE'))")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "LM_MALLOC_TUNING")}
  env.update(PYTHONPATH=root, PROBE="kept")
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  assert out.stdout.split() == [host_malloc.TUNABLES, "kept"]
  env["LM_MALLOC_TUNING"] = "0"
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
  assert out.stdout.split() == ["None", "kept"]
