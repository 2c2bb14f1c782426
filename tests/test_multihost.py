"""Two processes on loopback (jax.distributed + gloo CPU collectives) = one process."""
import json
import os
import subprocess
import sys

import numpy as np
import portpicker

from tests.conftest import ROOT

WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")


def worker_env(devices, **extra):
  e = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  e.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
           XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)
  return e


def test_two_processes_match_one():
  single = subprocess.run([sys.executable, WORKER], env=worker_env(4), capture_output=True,
                          text=True, timeout=300)
  assert single.returncode == 0, single.stderr[-3000:]
  ref = json.loads(single.stdout.strip().splitlines()[-1])

  port = portpicker.pick_unused_port()
  procs = [subprocess.Popen([sys.executable, WORKER], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=worker_env(2, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                                                      JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
           for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  results = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
  assert {r["process"] for r in results} == {0, 1}
  for r in results:
    assert r["devices"] == 4 == ref["devices"]
    np.testing.assert_allclose(r["losses"], ref["losses"], rtol=1e-5)
    np.testing.assert_allclose(r["param_sq_norm"], ref["param_sq_norm"], rtol=1e-5)
  assert ref["losses"][-1] < ref["losses"][0]
