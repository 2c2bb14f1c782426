#!/usr/bin/env bash
# Run a Python module of this project in its own virtual environment, creating
# the environment and installing what is missing first (a no-op when the
# requirement files have not changed since the last install).
#
#   bash launch/local.sh experiments.pretrain --config=configs/pretrain.py:tiny --workdir=runs/tiny
#   bash launch/local.sh pytest                      # the test suite (adds requirements-test.txt)
#
# Needs only python3 (3.11+) with venv and pip. LM_VENV picks another env folder.
# When TCMalloc is installed (Debian/Ubuntu: apt-get install libtcmalloc-minimal4;
# TPU VM images ship it) it is preloaded, as MaxText does: XLA allocates each
# step's temporary buffers afresh, and glibc returns large blocks to the kernel,
# so every step page-faults its whole working set back in (~200k faults and
# ~15% of a CPU train step here); TCMalloc keeps the pages. LM_TCMALLOC=0 turns
# this off.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LM_VENV:-.venv}"
module="${1:?usage: launch/local.sh <module> [args...]}"
shift

reqs=(requirements.txt)
[[ "$module" == pytest ]] && reqs+=(requirements-test.txt)

if [[ ! -x "$venv/bin/python" ]]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.installed-$(cat "${reqs[@]}" | sha1sum | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt \
    $([[ ${#reqs[@]} -gt 1 ]] && echo "-r requirements-test.txt")
  touch "$stamp"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [[ "${LM_TCMALLOC:-1}" != 0 && "${LD_PRELOAD:-}" != *tcmalloc* ]]; then
  for lib in /usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib/x86_64-linux-gnu/libtcmalloc.so.4 \
             /usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4 /usr/lib64/libtcmalloc_minimal.so.4; do
    if [[ -f "$lib" ]]; then
      export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
      break
    fi
  done
fi
exec "$venv/bin/python" -m "$module" "$@"
