#!/usr/bin/env bash
# Run a Python module of this project in its own virtual environment, creating
# the environment and installing what is missing first (a no-op when the
# requirement files have not changed since the last install).
#
#   bash launch/local.sh experiments.pretrain --config=configs/pretrain.py:tiny --workdir=runs/tiny
#   bash launch/local.sh pytest                      # the test suite (adds requirements-test.txt)
#
# Several processes on loopback, as on several hosts (jax.distributed, gloo; launch/local_procs.py):
#   NPROC=2 DEVICES=4 bash launch/local.sh experiments.sft --config=configs/sft.py:tiny --workdir=runs/sft2 ...
# NPROC processes with DEVICES/NPROC virtual CPU devices each (DEVICES: default one per process;
# set alone, the virtual CPU devices of one process). Signals reach every process; the first to
# fail stops the others and gives the exit status. DRY_RUN=1 prints their commands instead.
#
# Needs only python3 (3.11+) with venv and pip. LM_VENV picks another env folder;
# LM_SKIP_INSTALL=1 runs that env's python as it is (no venv creation, no pip).
# On hosts without an accelerator it starts Python with glibc malloc tunables that
# stop XLA:CPU's per-step page faults (lm/cpu/malloc.py; LM_CPU_SPEEDUPS=0: off).
# DRY_RUN=1 prints what it would run (venv, pip, python) and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LM_VENV:-.venv}"
module="${1:?usage: launch/local.sh <module> [args...]}"
shift
source launch/dry_run.sh

# Requirements by use: the core stack always; the web pipeline's heavy dependencies for the
# data experiments (and the tests); test-only ones (PyTorch, transformers) for pytest.
reqs=(requirements.txt)
case "$module" in
  experiments.prepare_data|experiments.train_tokenizer|experiments.tokenize_data|experiments.pipeline)
    reqs+=(requirements-web.txt) ;;  # the pipeline runs the data stages too
  pytest) reqs+=(requirements-web.txt requirements-test.txt) ;;
  experiments.bench) reqs+=(requirements-test.txt) ;;  # the PyTorch / transformers peers
esac

if [[ "${LM_SKIP_INSTALL:-0}" != 1 ]]; then
  if [[ ! -x "$venv/bin/python" ]]; then
    [[ "${DRY_RUN:-0}" == 1 ]] || echo "creating the virtual environment $venv (python3 -m venv)" >&2
    run python3 -m venv "$venv"
  fi
  # A stamp per set of requirement files; the full set's (what pytest installs) serves every module.
  digest() { cat "$@" | sha1sum | cut -c1-12; }
  stamp="$venv/.installed-$(digest "${reqs[@]}")"
  full="$venv/.installed-$(digest requirements.txt requirements-web.txt requirements-test.txt)"
  if [[ ! -f "$stamp" && ! -f "$full" ]]; then
    if [[ "${DRY_RUN:-0}" != 1 ]]; then
      # Measured on the 2-core VM, 2026-12-02, from its local wheel mirror: requirements.txt 52 s, then
      # the tests' extras (torch, transformers, the web pipeline) 2 min 41 s more; 2.4 GB in all.
      echo "installing ${reqs[*]} into $venv (once per change of those files: about 1 min for" \
           "requirements.txt, 3-4 min with the tests' extras, more on a slow network; pip's output follows)" >&2
    fi
    run "$venv/bin/python" -m pip install --disable-pip-version-check --progress-bar=on \
      $(printf -- "-r %s " "${reqs[@]}")
    run touch "$stamp"
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nproc="${NPROC:-1}"
several=$([[ "$nproc" != 1 || -n "${DEVICES:-}" ]] && echo 1 || echo 0)
if [[ "${DRY_RUN:-0}" == 1 && ! ( "$several" == 1 && -x "$venv/bin/python" ) ]]; then
  echo "eval \"\$($venv/bin/python -m lm.cpu.malloc)\""
  show exec "$venv/bin/python" -m "$module" "$@"
  exit 0
fi
eval "$("$venv/bin/python" -m lm.cpu.malloc)"
if [[ "$several" == 1 ]]; then  # (with DRY_RUN=1: local_procs prints each process's command, runs none)
  exec "$venv/bin/python" -m launch.local_procs --nproc="$nproc" --devices="${DEVICES:-0}" \
      ${LOGS:+--logs="$LOGS"} $([[ "${DRY_RUN:-0}" == 1 ]] && echo --dry_run) "$module" "$@"
fi
exec "$venv/bin/python" -m "$module" "$@"
