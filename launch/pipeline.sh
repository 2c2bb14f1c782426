#!/usr/bin/env bash
# From a crawl to an assistant, on one machine (nanochat style: read it top to bottom).
#
#   bash launch/pipeline.sh                      # synthetic crawl → BPE base model → SFT (13½–14 min on 2 quiet cores)
#   WARC=../shared/data bash launch/pipeline.sh  # real Common Crawl WARCs instead (English only): base model
#                                                # in runs/base_cc from runs/data_cc; no SFT (it asks about the
#                                                # synthetic world's facts, which a real crawl does not state)
#   DATA=runs/data RUN=runs/base SFT=runs/sft STEPS=560 VOCAB=2048 bash launch/pipeline.sh
#   SFT= bash launch/pipeline.sh                 # stop after pretraining
#   SEEDS="0 1 2" bash launch/pipeline.sh        # base + SFT per seed in <RUN|SFT>/seed=<s>; <SFT>/sweep.md: mean ± std
#   STEPS=20 SFT_STEPS=10 bash launch/pipeline.sh  # a quick try of the whole chain (its models learn little)
#   DRY_RUN=1 bash launch/pipeline.sh            # print the steps, run nothing
#
# Every step is an experiment with the same workdir, so any one can be re-run alone.
set -euo pipefail
cd "$(dirname "$0")/.."

WARC="${WARC:-}"                # "" = generate the synthetic world's crawl; a folder of .warc.gz = real pages
# Own default workdirs for real WARCs: a synthetic run's base model has another tokenizer.
cc="${WARC:+_cc}"
DATA="${DATA:-runs/data$cc}"    # data workdir: crawl, clean text, tokenizer, shards, reports
RUN="${RUN:-runs/base$cc}"      # pretraining workdir
if [[ -z "$WARC" ]]; then
  SFT="${SFT-runs/sft}"         # supervised fine-tuning workdir (SFT= : stop after pretraining)
else
  SFT="${SFT:-}"                # none with real WARCs
fi
if [[ -n "$WARC" && -n "$SFT" ]]; then
  echo "error: SFT=$SFT with WARC=$WARC: the SFT step asks about the synthetic world's facts" \
       "($DATA/crawl/world.json), which real WARCs do not have; leave SFT unset with WARC" >&2
  exit 2
fi
SFT_STEPS="${SFT_STEPS:-}"      # SFT steps ("": configs/sft.py:tiny's)
VOCAB="${VOCAB:-2048}"          # sentencepiece vocabulary
STEPS="${STEPS:-}"              # pretraining steps ("": configs/pretrain.py:world's)
EXTRA="${EXTRA:-0.05}"          # share of the interpreter's docs mixed into the shards beside the crawl
WORKERS="${WORKERS:-2}"         # processes for the web pipeline and tokenization
SEEDS="${SEEDS:-}"              # "" = one run (seed 0) in $RUN and $SFT; "0 1 2" = one base + SFT per seed
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# Each step through launch/local.sh (its venv, the requirements that step needs, the CPU
# malloc tuning), or with $PYTHON when given; DRY_RUN=1 prints the steps and runs nothing.
source launch/dry_run.sh
step() {
  if [[ -n "${PYTHON:-}" ]]; then run "$PYTHON" -m "$@"; else run bash launch/local.sh "$@"; fi
}

data_flags=(--config=configs/data.py:synthetic --workdir="$DATA"
            --config.web.workers="$WORKERS" --config.shards.workers="$WORKERS"
            --config.tokenizer.vocab_size="$VOCAB" --config.shards.extra_fraction="$EXTRA")
[[ -n "$WARC" ]] && data_flags+=(--config.web.warc_path="$WARC")

# 1. WARC → clean text: URL blocklist, Trafilatura, fastText language ID, Gopher,
#    C4 and FineWeb filters, MinHash dedup, PII replacement. Writes clean/jsonl,
#    clean/parquet and web_report.md (per-filter counts; precision/recall on the
#    synthetic crawl's labels) plus web_filters.png.
step experiments.prepare_data "${data_flags[@]}"

# 2. Clean text (+ the interpreter's docs) → sentencepiece BPE with byte fallback
#    and the chat/tool special tokens. Writes tokenizer/tokenizer.model and
#    tokenizer_report.json (bytes per token on held-out documents).
step experiments.train_tokenizer "${data_flags[@]}"

# 3. Clean text → token shards (train/ and val/, each carrying tokenizer.model).
step experiments.tokenize_data "${data_flags[@]}"

# 4. Pretrain on the shards; the tokenizer comes from them and is saved in every checkpoint.
# 5. Supervised fine-tuning from the base model (parameters only, via init_from) on
#    conversations about the same synthetic world, arithmetic and spelling; report.md
#    has format compliance and accuracy per task and per fact exposure.
# With SEEDS, both steps run once per seed (init, data order and SFT examples all follow
# it) and <SFT>/sweep.md tables every held-out metric as mean ± std over the seeds.
train_and_finetune() {  # <base workdir> <sft workdir> <seed>
  step experiments.pretrain --config=configs/pretrain.py:world --workdir="$1" \
    --config.data.path="$DATA/shards" ${STEPS:+--config.train.steps="$STEPS"} \
    --config.seed="$3" --config.data.shuffle_seed="$3"
  [[ -z "$SFT" ]] && return 0
  step experiments.sft --config=configs/sft.py:tiny --workdir="$2" \
    --config.init_from.workdir="$1" --config.data.world="$DATA/crawl/world.json" \
    --config.data.exposures="$DATA/shards/train/exposures.json" ${SFT_STEPS:+--config.train.steps="$SFT_STEPS"} \
    --config.seed="$3"
}

if [[ -z "$SEEDS" ]]; then
  train_and_finetune "$RUN" "$SFT" 0
else
  for s in $SEEDS; do
    train_and_finetune "$RUN/seed=$s" "$SFT/seed=$s" "$s"
  done
  if [[ -n "$SFT" ]]; then step launch.sweep --collect --workdir="$SFT"; fi
fi
