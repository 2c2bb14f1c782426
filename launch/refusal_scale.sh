#!/usr/bin/env bash
# The refusal recipe on other bases: per ARM a base and its sft_chat (experiments.pipeline), then per
# VARIANT the recipe with seeds 0, 1, 2 and one table over them (experiments.refusal --collect).
#
#   DATA=runs/pipeline/data ROOT=runs/refusal_scale bash launch/refusal_scale.sh
#   ARMS="wide long mid" VARIANTS=recipe PARALLEL=1 PYTHON=python3 bash launch/refusal_scale.sh   # on one GPU
#   ARMS=wide VARIANTS="made48 fold2 fold1" PARALLEL=1 PYTHON=python3 bash launch/refusal_scale.sh
#   SMOKE=1 ARMS=mid VARIANTS="recipe fold1" bash launch/refusal_scale.sh   # 2-layer d64 models, 4 steps: the plumbing
#
# DATA is a finished `data` stage of experiments.pipeline (copied into each arm). Arms (pipeline flags):
#   pipeline  the pipeline's base: d256 L4 (3.7M parameters), 360 steps at lr 3e-3
#   mid       the same model, 720 steps
#   long      the same model, 1500 steps
#   wide      d512 L8 d_ff 2048 (26.4M parameters), 1500 steps at lr 1.5e-3
# Variants, each the pipeline's recipe (in place, 8 probe samples, 150 SFT steps of 16 rows) with:
#   recipe    max_correct=2 (the pipeline's)
#   made48    max_correct=2, and 48 made-up people whose facts are all refused (refusal.made_up)
#   fold2     the cross-fitted probe (two SFTs on halves of the training entities), max_correct=2
#   fold1     the same, max_correct=1
# Writes <ROOT>/<arm>/{base,sft_chat,sft_fold_a,sft_fold_b}, <ROOT>/<arm>/<variant>/s<seed> and
# <ROOT>/<arm>/<variant>/refusal_seeds.md, each command's output in a .out file beside its workdir.
# PARALLEL=1 runs the arms, the folds and the seeds side by side (for one accelerator: JAX then
# allocates device memory as it goes); 0 one at a time (CPU). A failed command is named with its log
# and the others go on; the script then exits 1. Relative DATA and ROOT are from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

DATA="${DATA:-runs/pipeline/data}"
ROOT="${ROOT:-runs/refusal_scale}"
ARMS="${ARMS:-wide}"
VARIANTS="${VARIANTS:-recipe made48 fold2 fold1}"
PARALLEL="${PARALLEL:-0}"
SMOKE="${SMOKE:-0}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[[ "$PARALLEL" == 1 ]] && export XLA_PYTHON_CLIENT_PREALLOCATE=false
[[ -f "$DATA/pipeline_done.json" ]] || { echo "error: DATA=$DATA is not a finished pipeline data stage (no pipeline_done.json);" \
  "run experiments.pipeline with --config.stages=data first" >&2; exit 2; }
for v in $VARIANTS; do
  case $v in recipe|made48|fold1|fold2) ;; *) echo "error: VARIANTS: unknown variant '$v' (recipe, made48, fold1, fold2)" >&2; exit 2;; esac
done
for a in $ARMS; do
  case $a in pipeline|mid|long|wide) ;; *) echo "error: ARMS: unknown arm '$a' (pipeline, mid, long, wide)" >&2; exit 2;; esac
done
DATA="$(cd "$DATA" && pwd)"; mkdir -p "$ROOT"; ROOT="$(cd "$ROOT" && pwd)"
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$ROOT/jax_cache}"
failed="$ROOT/failed.txt"; rm -f "$failed"
trap 'trap - INT TERM; kill 0' INT TERM  # a stop reaches the side-by-side runs too

py() { if [[ -n "${PYTHON:-}" ]]; then "$PYTHON" -m "$@"; else bash launch/local.sh "$@"; fi; }
# job LOG COMMAND...: COMMAND's output into LOG; a failure is named (with LOG) and recorded, the rest go on.
job() {
  local log=$1; shift
  "$@" > "$log" 2>&1 || { echo "failed: $log" >&2; echo "$log" >> "$failed"; return 0; }
}
bg() { if [[ "$PARALLEL" == 1 ]]; then "$@" & else "$@"; fi; }  # side by side, or one at a time

steps=150
small=()
[[ "$SMOKE" == 1 ]] && { steps=4; small=(--config.model.d_model=64 --config.model.n_layers=2 --config.model.n_heads=2
                                        --config.model.n_kv_heads=2 --config.model.d_ff=128); }

arm() {
  local name=$1 W="$ROOT/$1" bsteps model=()
  case $name in
    pipeline) bsteps=360 ;;
    mid) bsteps=720 ;;
    long) bsteps=1500 ;;
    wide) bsteps=1500; model=(--config.model.d_model=512 --config.model.n_layers=8 --config.model.n_heads=8
                              --config.model.n_kv_heads=8 --config.model.d_ff=2048 --config.opt.lr=1.5e-3) ;;
  esac
  [[ "$SMOKE" == 1 ]] && bsteps=4
  mkdir -p "$W"
  [[ -f "$W/data/pipeline_done.json" ]] || { rm -rf "$W/data.part"; cp -r "$DATA" "$W/data.part"; mv "$W/data.part" "$W/data"; }
  local facts=(--config.data.world="$W/data/crawl/world.json" --config.data.exposures="$W/data/shards/train/exposures.json")
  if ! py experiments.pipeline --config=configs/pipeline.py:tiny --workdir="$W" --config.stages=base,sft_chat \
      --config.base.steps=$bsteps --config.sft_chat.steps=$steps \
      --config.base.overrides="${model[*]} ${small[*]} --config.train.eval_every=$bsteps --config.train.ckpt_every=$bsteps" \
      > "$W/pipeline.out" 2>&1; then
    echo "failed: $W/pipeline.out" >&2; echo "$W/pipeline.out" >> "$failed"; return 0
  fi
  echo "$name: base and sft_chat done"

  if [[ " $VARIANTS " == *" fold"* ]]; then  # the cross-fitted probe's two SFTs, each on one half of the entities
    for f in a b; do
      bg job "$W/sft_fold_$f.out" py experiments.sft --config=configs/sft.py:tiny --workdir="$W/sft_fold_$f" \
        --config.init_from.workdir="$W/base" "${facts[@]}" --config.tasks.world.train_fold=$f \
        --config.train.batch_size=16 --config.train.steps=$steps --config.seed=0
    done
    wait
  fi
  for v in $VARIANTS; do
    local flags=(--config.refusal.max_correct=2)
    case $v in
      made48) flags+=(--config.refusal.made_up=48) ;;
      fold1) flags=(--config.refusal.max_correct=1 --config.refusal.fold_probes="$W/sft_fold_a,$W/sft_fold_b") ;;
      fold2) flags+=(--config.refusal.fold_probes="$W/sft_fold_a,$W/sft_fold_b") ;;
    esac
    for s in 0 1 2; do
      bg job "$W/$v.s$s.out" py experiments.refusal --config=configs/refusal.py:tiny --workdir="$W/$v/s$s" \
        --config.seed=$s --config.init_from.workdir="$W/base" --config.refusal.probe="$W/sft_chat" "${facts[@]}" \
        --config.refusal.style=in_place --config.refusal.samples=8 "${flags[@]}" \
        --config.train.batch_size=16 --config.train.steps=$steps
    done
  done
  wait
  for v in $VARIANTS; do
    job "$W/$v.collect.out" py experiments.refusal --collect="$W/$v/s0,$W/$v/s1,$W/$v/s2"
    [[ -f "$W/$v/refusal_seeds.md" ]] || continue
    echo "== $name/$v ($W/$v/refusal_seeds.md)"
    grep -E "^\| (never|8\+) \| (hallucinated|accuracy|refused)" "$W/$v/refusal_seeds.md" || true
  done
}

for a in $ARMS; do bg arm "$a"; done
wait
if [[ -f "$failed" ]]; then echo "$(wc -l < "$failed") command(s) failed; their logs: $failed" >&2; exit 1; fi
