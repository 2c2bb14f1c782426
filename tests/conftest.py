"""Test setup: 8 virtual CPU devices (set before JAX is imported) and shared fixtures."""
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for the session, shared with the experiments the tests start
# as subprocesses (env() inherits it): a resume or a second run of the same config loads its
# programs instead of compiling them again. Fresh per session, removed at exit.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import atexit
  import shutil
  import tempfile
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="lm-tests-jax-cache-")
  atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], True)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED_DATA = os.path.join(ROOT, "..", "shared", "data")

import pytest  # noqa: E402

from lm import cpu as _cpu  # noqa: E402

# As entry points do: the CPU implementations are registered unless LM_CPU_SPEEDUPS=0.
CPU_SPEEDUPS = _cpu.register()


def env() -> dict:
  """The environment of an experiment run as a subprocess: one CPU device, as on a user's machine."""
  e = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  e["XLA_FLAGS"] = ""
  return e


# CI sets this (.ci/run): there a missing data file is a failure, not a silent skip.
REQUIRE_SHARED_DATA = os.environ.get("LM_REQUIRE_SHARED_DATA") == "1"


def shared_file(name: str) -> str:
  """Path of a real data file from ../shared/data; skip the test saying which is missing
  (fail under LM_REQUIRE_SHARED_DATA=1, as in CI)."""
  path = os.path.join(SHARED_DATA, name)
  if not os.path.exists(path):
    message = f"needs ../shared/data/{name} (see shared/data/SOURCES.md)"
    if REQUIRE_SHARED_DATA:
      pytest.fail(message + "; LM_REQUIRE_SHARED_DATA=1 makes that a failure")
    pytest.skip(message)
  return path


def snapshot(folder) -> dict:
  """{relative path: (size, mtime_ns, sha256)} of every file under `folder`: compare two to show
  that nothing that existed was changed."""
  import hashlib
  out = {}
  for root, _, files in os.walk(folder):
    for name in files:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, folder)] = (os.path.getsize(path), os.stat(path).st_mtime_ns,
                                              hashlib.sha256(f.read()).hexdigest())
  return out


def require_kernel():
  """Skips only where no C++ compiler exists; a compiler that fails to build the CPU attention
  kernel fails the test (a broken kernel must not leave CI green)."""
  from lm.cpu import build as cpu_kernels
  if cpu_kernels.compiler() is None:
    pytest.skip("no C++ compiler: the CPU attention kernel cannot be built here")
  if (reason := cpu_kernels.unavailable_reason()) is not None:
    pytest.fail(f"the CPU attention kernel did not build: {reason}")


@pytest.fixture
def tiny_model_config():
  from configs import base
  cfg = base.model_config("tiny")
  cfg.update(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=4, d_ff=64, max_len=32)
  return cfg


@pytest.fixture
def tiny_llama_config():
  from configs import base
  cfg = base.model_config("llama_tiny")
  cfg.update(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=64, max_len=32)
  return cfg


def needs_cpu_speedups():
  """Skip a test of the optional CPU package when it is switched off."""
  if not CPU_SPEEDUPS:
    pytest.skip("CPU speed-ups switched off (LM_CPU_SPEEDUPS=0)")


def tiny_base_flags(steps: int, log_every: int, max_len: int = 128) -> list[str]:
  """experiments.pretrain flags of a tiny byte-level base model (2 layers, width 64) trained `steps` steps,
  evaluated and saved at the last one."""
  return ["--config.model.d_model=64", "--config.model.n_layers=2", "--config.model.n_heads=2",
          "--config.model.n_kv_heads=2", "--config.model.d_ff=128", f"--config.model.max_len={max_len}",
          "--config.train.seq_len=64", "--config.train.batch_size=8", f"--config.train.steps={steps}",
          f"--config.train.ckpt_every={steps}", f"--config.train.eval_every={steps}",
          f"--config.train.log_every={log_every}", "--config.train.eval_batches=1",
          "--config.sample.max_new_tokens=4", "--config.opt.warmup_steps=2"]


def pretrain_tiny_base(folder, text: str, flags) -> str:
  """Pretrains a tiny base model on `text` (written to <folder>/text.txt) into <folder>/run."""
  import subprocess
  corpus = folder / "text.txt"
  corpus.write_text(text)
  out = subprocess.run([sys.executable, "-m", "experiments.pretrain", "--config=configs/pretrain.py:tiny",
                        f"--workdir={folder / 'run'}", *flags, f"--config.data.path={corpus}"],
                       env=env(), cwd=ROOT, timeout=600, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  return folder / "run"


@pytest.fixture(scope="session")
def byte_base(tmp_path_factory):
  """A tiny byte-level base model, trained once per session (the byte tokenizer has the chat special
  tokens, so post-training stages can start from it and sample from it in the conversation format;
  max_len 512: a page pasted into a byte-level prompt is long)."""
  import numpy as np
  rng = np.random.default_rng(0)
  text = "\n\n".join(" ".join(rng.choice(["she", "was", "born", "in", "19"], 30)) for _ in range(100))
  return pretrain_tiny_base(tmp_path_factory.mktemp("byte_base"), text, tiny_base_flags(6, 3, max_len=512))
