#!/usr/bin/env bash
# Run a module of this project on every worker of a Cloud TPU VM (one host or a pod slice).
#
#   TPU_NAME=my-v4-32 ZONE=us-central2-b bash launch/tpu_vm.sh experiments.pretrain \
#       --config=configs/pretrain.py:gpt2_124m --workdir=gs://my-bucket/runs/gpt2
#
# Code: the working tree (tracked and untracked, not ignored) is copied to every
# worker, so uncommitted edits run; GIT_REF=<branch|tag|sha> clones REPO_URL
# (default: this checkout's origin) at that ref instead. Env: TPU_NAME, ZONE
# (required), PROJECT, GIT_REF, REPO_URL, PYTHON (default python3.11: TPU VM
# images ship 3.10, which jax no longer supports). DRY_RUN=1 prints the commands.
set -euo pipefail
cd "$(dirname "$0")/.."
name="${TPU_NAME:?set TPU_NAME (the TPU VM to run on)}"
zone="${ZONE:?set ZONE (the TPU VM zone, e.g. us-central2-b)}"
module="${1:?usage: TPU_NAME=.. ZONE=.. launch/tpu_vm.sh <module> [args...]}"
shift
py="${PYTHON:-python3.11}"
jax_version="$(sed -n 's/^jax==//p' requirements.txt)"
tpu=(gcloud compute tpus tpu-vm)
where=(--zone="$zone" ${PROJECT:+--project="$PROJECT"})

source launch/dry_run.sh

for a in "$@"; do
  # Every worker writes its own part of each checkpoint: they must share one filesystem.
  if [[ "$a" == --workdir=* && "$a" != --workdir=gs://* ]]; then
    echo "warning: ${a#--workdir=} is not a gs:// path; each worker would write to its own disk" >&2
  fi
done

if [[ -n "${GIT_REF:-}" ]]; then
  repo="${REPO_URL:-$(git remote get-url origin)}"
  fetch="(test -d lm/.git || git clone -q $(printf %q "$repo") lm) && cd lm"
  fetch+=" && git fetch -q origin $(printf %q "$GIT_REF") && git checkout -q --detach FETCH_HEAD"
else
  tarball="${TMPDIR:-/tmp}/lm-src-$name.tgz"
  run bash -c "git ls-files -coz --exclude-standard | tar czf $(printf %q "$tarball") --ignore-failed-read --null -T -"
  run "${tpu[@]}" scp "$tarball" "$name:lm-src.tgz" --worker=all "${where[@]}"
  fetch="rm -rf lm && mkdir lm && tar xzf lm-src.tgz -C lm && cd lm"
fi

# The venv lives outside the code folder so that a fresh copy of the code keeps it.
steps=(
  "cd ~ && $fetch"
  "(command -v $py >/dev/null || (sudo apt-get update -qq && sudo apt-get install -y -qq $py $py-venv))"
  "(test -x ~/lm-venv/bin/python || $py -m venv ~/lm-venv)"
  "~/lm-venv/bin/pip install -q --disable-pip-version-check -r requirements.txt \"jax[tpu]==$jax_version\" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
  "export LM_DISTRIBUTED=auto && exec ~/lm-venv/bin/python -m $module$(printf ' %q' "$@")"
)
remote="$(printf ' && %s' "${steps[@]}")"
run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command "${remote# && }"
