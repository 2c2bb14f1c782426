"""launch/local.sh with NPROC (launch/local_procs.py): the processes' environments, a failing process
stopping the rest, signals reaching every process. Stand-in modules, no JAX; a few seconds."""
import os
import signal
import subprocess
import sys
import time

from tests.conftest import ROOT

STANDIN = '''
import os, signal, sys, time
me = int(os.environ.get("JAX_PROCESS_ID", "0"))
out = sys.argv[1]
signal.signal(signal.SIGTERM, lambda s, f: (open(f"{out}/term_{me}", "w").close(), sys.exit(0)))
open(f"{out}/started_{me}", "w").close()
if me == int(sys.argv[2]):
  sys.exit(3)
time.sleep(60)
'''


def local_sh(args, tmp_path, **env):
  """launch/local.sh on this interpreter's environment, as it is (no venv, no pip)."""
  e = dict(os.environ, LM_VENV=sys.prefix, LM_SKIP_INSTALL="1",
           PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}", **env)
  return subprocess.Popen(["bash", os.path.join(ROOT, "launch", "local.sh"), *args], env=e,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def standin(tmp_path):
  (tmp_path / "standin.py").write_text(STANDIN)
  out = tmp_path / "out"
  out.mkdir()
  return out


def test_dry_run_gives_each_process_its_id_and_share_of_devices(tmp_path):
  p = local_sh(["experiments.sft", "--config=configs/sft.py:tiny", "--workdir=runs/a b"], tmp_path,
               NPROC="2", DEVICES="4", DRY_RUN="1")
  out, err = p.communicate(timeout=30)
  assert p.returncode == 0, err
  lines = out.strip().splitlines()
  assert len(lines) == 2
  port = lines[0].split("JAX_COORDINATOR_ADDRESS=127.0.0.1:")[1].split()[0]
  for i, line in enumerate(lines):
    for part in ("JAX_PLATFORMS=cpu", "XLA_FLAGS=--xla_force_host_platform_device_count=2",
                 f"JAX_COORDINATOR_ADDRESS=127.0.0.1:{port}", "JAX_NUM_PROCESSES=2", f"JAX_PROCESS_ID={i}",
                 "-m experiments.sft --config=configs/sft.py:tiny '--workdir=runs/a b'"):
      assert part in line, (part, line)
  one = local_sh(["experiments.sft"], tmp_path, DEVICES="4", DRY_RUN="1")
  out, _ = one.communicate(timeout=30)
  assert "device_count=4" in out and "JAX_PROCESS_ID" not in out  # one process: no coordinator


def test_devices_must_split_evenly(tmp_path):
  p = local_sh(["experiments.sft"], tmp_path, NPROC="3", DEVICES="4")
  _, err = p.communicate(timeout=30)
  assert p.returncode == 2 and "DEVICES" in err.strip().splitlines()[-1]


def test_a_failing_process_stops_the_others_and_gives_the_status(tmp_path):
  out = standin(tmp_path)
  t = time.time()
  p = local_sh(["standin", str(out), "1"], tmp_path, NPROC="2", LOGS=str(tmp_path / "logs"))
  _, err = p.communicate(timeout=60)
  assert p.returncode == 3, err
  assert time.time() - t < 30, "process 0 should have been stopped, not waited for"
  assert (out / "term_0").exists()  # process 0 got SIGTERM
  assert "process 1 of 2 exited with status 3" in err


def test_sigterm_reaches_every_process(tmp_path):
  out = standin(tmp_path)
  p = local_sh(["standin", str(out), "-1"], tmp_path, NPROC="2", LOGS=str(tmp_path / "logs"))
  deadline = time.time() + 30
  while not all((out / f"started_{i}").exists() for i in range(2)) and time.time() < deadline:
    time.sleep(0.05)
  p.send_signal(signal.SIGTERM)
  _, err = p.communicate(timeout=30)
  assert p.returncode == 0, err
  assert (out / "term_0").exists() and (out / "term_1").exists()
