"""N processes of one module on this machine, joined by jax.distributed over loopback.

    NPROC=2 DEVICES=4 bash launch/local.sh experiments.sft --config=configs/sft.py:tiny --workdir=runs/sft2
    python -m launch.local_procs --nproc=2 --devices=4 experiments.sft --config=... --workdir=...

What `launch/local.sh` runs when NPROC > 1: the multi-host code path (one
process per host, each feeding its own rows of the global batch) on one CPU
machine, for tests and for checking that a stage gives the same losses as one
process. Every process gets the coordinator's free loopback port and its id
(JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, which
`lm.sharding.initialize_distributed` reads), DEVICES / NPROC virtual CPU devices
and gloo collectives. Process 0 writes to this terminal; process i > 0 to
`<logs>/process_<i>.log` (`--logs`, default a fresh folder under $TMPDIR), whose tail
is printed if it fails. SIGTERM / SIGINT are passed to every process (each
saves a checkpoint and exits, as one process does). The first process to fail
ends the others (SIGTERM, SIGKILL after `--grace` seconds: the rest would wait
for it in a collective forever), and its status is the launcher's; 0 when all
succeed. `--dry_run` prints each process's environment and command and starts nothing.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time



def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_envs(nproc: int, devices: int, port: int, base: dict[str, str]) -> list[dict[str, str]]:
  """The environment of each process: loopback coordinator, its id, its share of CPU devices."""
  xla = re.sub(r"--xla_force_host_platform_device_count=\S+", "", base.get("XLA_FLAGS", "")).strip()
  xla = f"{xla} --xla_force_host_platform_device_count={devices // nproc}".strip()
  common = {k: v for k, v in base.items() if not k.startswith("JAX_") or k == "JAX_COMPILATION_CACHE_DIR"}
  common.update(JAX_PLATFORMS="cpu", XLA_FLAGS=xla)
  if nproc == 1:  # one process: no coordinator, just its CPU devices
    return [common]
  common.update(JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES=str(nproc))
  return [dict(common, JAX_PROCESS_ID=str(i)) for i in range(nproc)]


def parse(argv: list[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m launch.local_procs", description=__doc__.split("\n\n")[0])
  p.add_argument("--nproc", type=int, required=True, help="processes (≥ 1)")
  p.add_argument("--devices", type=int, default=0, help="virtual CPU devices in all (default: one per process)")
  p.add_argument("--logs", default="", help="folder of the process_<i>.log files of processes 1..N-1")
  p.add_argument("--grace", type=float, default=30.0, help="seconds between SIGTERM and SIGKILL of the rest")
  p.add_argument("--dry_run", action="store_true", help="print the processes' commands, start nothing")
  p.add_argument("module", help="the module to run, e.g. experiments.sft")
  p.add_argument("args", nargs=argparse.REMAINDER, help="its flags")
  a = p.parse_args(argv)
  a.devices = a.devices or a.nproc
  if a.nproc < 1:
    p.error(f"--nproc (NPROC) must be ≥ 1, got {a.nproc}")
  if a.devices < a.nproc or a.devices % a.nproc:
    p.error(f"--devices (DEVICES) must be a multiple of --nproc (NPROC)={a.nproc}, got {a.devices}")
  return a


def tail(path: str, n: int = 40) -> str:
  try:
    with open(path, errors="replace") as f:
      return "".join(f.readlines()[-n:])
  except OSError:
    return ""


def main(argv: list[str]) -> int:
  a = parse(argv)
  envs = process_envs(a.nproc, a.devices, free_port(), dict(os.environ))
  cmd = [sys.executable, "-m", a.module, *a.args]
  changed = ("JAX_PLATFORMS", "JAX_CPU_COLLECTIVES_IMPLEMENTATION", "XLA_FLAGS", "JAX_COORDINATOR_ADDRESS",
             "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
  if a.dry_run:
    for e in envs:
      print(" ".join(f"{k}={shlex.quote(e[k])}" for k in changed if k in e) + " " + shlex.join(cmd))
    return 0
  logs = a.logs or tempfile.mkdtemp(prefix="lm-procs-")
  os.makedirs(logs, exist_ok=True)
  procs, files = [], []
  for i, e in enumerate(envs):
    out = None
    if i:
      out = open(os.path.join(logs, f"process_{i}.log"), "w")
      files.append(out)
    # Their own process group: a terminal's Ctrl-C reaches them once, through `forward`, not twice.
    procs.append(subprocess.Popen(cmd, env=e, stdout=out, stderr=subprocess.STDOUT if out else None,
                                  process_group=0))
  if a.nproc > 1:
    print(f"local_procs: {a.nproc} processes × {a.devices // a.nproc} CPU devices on 127.0.0.1:"
          f"{envs[0]['JAX_COORDINATOR_ADDRESS'].rsplit(':', 1)[1]}; processes 1..{a.nproc - 1} log to {logs}",
          file=sys.stderr, flush=True)

  signalled = []

  def forward(signum, frame):
    signalled.append(signum)  # every process got it and stops on its own: exits are not failures
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)

  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, forward)
  status, failed = 0, None
  try:
    while [p.poll() for p in procs].count(None):  # poll every one (any() would stop at the first)
      bad = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode not in (None, 0)]
      if bad and failed is None and not signalled:
        failed, rc = bad[0]
        status = rc if rc > 0 else 128 - rc
        for p in procs:
          if p.poll() is None:
            p.terminate()
        deadline = time.time() + a.grace
        while time.time() < deadline and [p.poll() for p in procs].count(None):
          time.sleep(0.1)
        for p in procs:
          if p.poll() is None:
            p.kill()
        break
      time.sleep(0.1)
    for p in procs:
      p.wait()
    if failed is None:
      bad = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
      if bad:
        failed, rc = bad[0]
        status = rc if rc > 0 else 128 - rc
  finally:
    for f in files:
      f.close()
  if failed is not None and a.nproc > 1 and not signalled:
    if failed:
      sys.stderr.write(tail(os.path.join(logs, f"process_{failed}.log")))
    print(f"local_procs: process {failed} of {a.nproc} exited with status {status}; the others were stopped "
          f"(logs: {logs})", file=sys.stderr, flush=True)
  return status


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
