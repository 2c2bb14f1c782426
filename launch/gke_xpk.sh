#!/usr/bin/env bash
# Submit a module of this project as an xpk workload on a GKE cluster of TPU slices.
#
#   CLUSTER=my-cluster TPU_TYPE=v5p-32 NUM_SLICES=2 bash launch/gke_xpk.sh experiments.pretrain \
#       --config=configs/pretrain.py:llama_1b --workdir=gs://my-bucket/runs/llama_1b
#
# Image: by default xpk layers this tree's source files (git ls-files: tracked
# and untracked, not ignored) onto BASE_IMAGE (python:3.11-slim), and the pods
# install the requirements, jax[tpu] at requirements.txt's pin, when they start.
# DOCKER_IMAGE=<prebuilt image with code and dependencies in /app> is used as is.
# Env: CLUSTER, TPU_TYPE (required), NUM_SLICES (1), WORKLOAD (default
# lm-<user>-<time>), PROJECT, ZONE, PRIORITY (medium), MAX_RESTARTS (0),
# XPK (the xpk command, default xpk). DRY_RUN=1 prints the commands.
set -euo pipefail
cd "$(dirname "$0")/.."
cluster="${CLUSTER:?set CLUSTER (the GKE cluster xpk created)}"
tpu_type="${TPU_TYPE:?set TPU_TYPE (e.g. v5p-32, v5litepod-256)}"
module="${1:?usage: CLUSTER=.. TPU_TYPE=.. launch/gke_xpk.sh <module> [args...]}"
shift
jax_version="$(sed -n 's/^jax==//p' requirements.txt)"
workload="${WORKLOAD:-lm-${USER:-user}-$(date +%m%d-%H%M%S)}"
# xpk accepts lowercase letters, digits and dashes, at most 40 characters.
workload="${workload,,}"
workload="${workload//[^a-z0-9-]/-}"
workload="${workload:0:40}"

source launch/dry_run.sh

for a in "$@"; do
  # Pods have no persistent disk: checkpoints and metrics must go to GCS to outlive the workload.
  if [[ "$a" == --workdir=* && "$a" != --workdir=gs://* ]]; then
    echo "warning: ${a#--workdir=} is not a gs:// path; it is lost when the pods end" >&2
  fi
done

# exec: python becomes the process the pod's SIGTERM reaches (it saves a checkpoint and exits 0).
command="export LM_DISTRIBUTED=auto && exec python3 -m $module$(printf ' %q' "$@")"
if [[ -n "${DOCKER_IMAGE:-}" ]]; then
  image=(--docker-image="$DOCKER_IMAGE")
else
  # xpk copies --script-dir whole into the image: stage only the source, not .venv or runs/.
  stage="${TMPDIR:-/tmp}/lm-xpk-$workload"
  run bash -c "rm -rf $stage && mkdir -p $stage && git ls-files -coz --exclude-standard | tar c --ignore-failed-read --null -T - | tar x -C $stage"
  image=(--base-docker-image="${BASE_IMAGE:-python:3.11-slim}" --script-dir="$stage")
  command="pip install -q --disable-pip-version-check -r requirements.txt \"jax[tpu]==$jax_version\" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html && $command"
fi

read -r -a xpk <<< "${XPK:-xpk}"
run "${xpk[@]}" workload create --cluster="$cluster" --workload="$workload" \
  --tpu-type="$tpu_type" --num-slices="${NUM_SLICES:-1}" "${image[@]}" \
  --priority="${PRIORITY:-medium}" --max-restarts="${MAX_RESTARTS:-0}" \
  ${PROJECT:+--project="$PROJECT"} ${ZONE:+--zone="$ZONE"} --command "$command"
