"""Evaluate the fine-tuned Debian summariser and export it as the model this project ships.

    python weights/default_model.py evaluate --model run/final --data /work/data/debian --out metrics.json
    python weights/default_model.py export --model run2/final --metrics metrics.json --history run/history.json \
        --history run2/history.json --out weights/NAME --name NAME
    python weights/default_model.py truecase --data /work/data/debian --out weights/NAME

`evaluate` generates with beam search (the model's generation_config special ids, `--beams`, `--max-new-tokens`,
`--no-repeat-ngram-size`) for each split, decodes without special tokens and scores ROUGE-1/2/L F-measures
(seq2seq/evaluate.py's scorer: rouge-score with stemming) of the model and of `baseline(source)`
(weights/debian_data.py) against the synopses. The model's outputs are scored truecased, as `summarize` prints
them (seq2seq/models/truecase.py, with the table learned from the data directory's train.jsonl), and as decoded
(lower case, WordPiece's spacing); each case-insensitively (rouge-score's tokenizer) and case-sensitively
(``CasedTokenizer``: the same words and stems, capitals compared too): what truecasing gains, and that it loses
nothing. `--limit N` scores N rows spread evenly over the split (rows i*len//N), not its alphabetical head.
It writes {split: {"n", "model", "baseline", "gap_rougeL", "gap_rougeL_ci95", "settings", "examples",
"model_raw", "case_sensitive"}} ("model": the truecased outputs' scores, "model_raw": the decoded outputs',
"case_sensitive": {"model", "model_raw", "baseline"}; ten example rows per split) and prints two tables.
`gap_rougeL_ci95` is the 95% paired-bootstrap interval of the ROUGE-L gap (2,000 resamples of the split's rows,
seeded: seq2seq.training.evaluate.paired_bootstrap): how much the gap could move on another set of rows drawn like
these. Everything is deterministic: fixed row choice, batches in length order, beam search. `--generated DIR`
keeps the generated texts, so that scoring them again takes seconds instead of a CPU's tens of minutes.

`export` writes config.json, generation_config.json (with the evaluated settings as generate()'s defaults,
as summarisation checkpoints on the Hub do), the tokenizer, model.safetensors with every floating tensor
cast to float16 and the truecasing table (truecase.json, learned from `--data`'s train.jsonl; `truecase` writes
it alone), then a model card (README.md). Encoder and decoder share their weights (tie_encoder_decoder=True):
this package loads one copy, but transformers 5 ignores the flag and needs the decoder's copies written out too.
`--tied-copies auto` (default) measures both files and writes the copies only when they fit the size limit
(`--max-mb`, decimal MB); the card records both sizes and the choice. The directory is written atomically: it
appears only after the size check and a reload check (seq2seq loads it, float16 widened to float32, and greedy
decoding of a few examples is compared with the source model) have run.
"""
import argparse
import importlib.util
import json
import os
import re
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script from a checkout

import safetensors.numpy  # noqa: E402
from seq2seq import EncoderDecoderModel, Tokenizer, no_grad, to_numpy  # noqa: E402
from seq2seq.models.checkpoint import save_state_dict  # noqa: E402
from seq2seq.models.truecase import Truecaser  # noqa: E402
from seq2seq.training.data import Seq2SeqDataset, read_jsonl  # noqa: E402
from seq2seq.core.errors import InputError  # noqa: E402
from seq2seq.training.evaluate import (ROUGE_TYPES, generate_texts, load_rouge, mean_rouge,  # noqa: E402
                                       paired_bootstrap, rouge_rows)
from seq2seq.training.console import format_seconds  # noqa: E402
from seq2seq.training.train import atomic_directory, write_json  # noqa: E402

SPLITS = ("test", "test_unseen_family")
EXAMPLES = 10
MAX_MB = 45.0
GENERATE_SETTINGS = ("num_beams", "max_new_tokens", "no_repeat_ngram_size")  # evaluate's generate() kwargs in
# metrics.json's settings, which the export makes generate()'s defaults
MB = 1_000_000
METADATA = {"dtype": "float16"}  # in the safetensors header, beside the "format": "pt" transformers checks
RECIPE = """bash weights/make_default_model.sh work/default-model

python weights/debian_data.py build --update --out data/debian
python -m seq2seq warm-start --tie-encoder-decoder --out warm
cat data/debian/*.jsonl > corpus.jsonl
python -m seq2seq trim-vocab --model warm --corpus corpus.jsonl --out trimmed
python -m seq2seq finetune --model trimmed --train data/debian/train.jsonl \\
    --validation data/debian/validation.jsonl --out run --resume"""  # README's, when it cannot be read


class ExportError(Exception):
    """An export that must not ship (too big, not finite); the CLI prints it and exits with status 1."""


def debian_data():
    """weights/debian_data.py, imported by path (weights/ is not a package)."""
    spec = importlib.util.spec_from_file_location("debian_data", HERE / "debian_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def spread(total, k):
    """k row indices spread evenly over ``range(total)`` (all of them when k is None or >= total)."""
    if k is None or k >= total:
        return list(range(total))
    return [i * total // k for i in range(k)]


# ---------------------------------------------------------------------------------------------- evaluate

def generate_split(model, tokenizer, pairs, *, generation, batch_size, max_source_len):
    """The model's decoded output for each source of ``pairs``, in their order, and the seconds it took."""
    data = Seq2SeqDataset.from_pairs(pairs, tokenizer, max_source_len=max_source_len)
    order = np.argsort(data.source_lengths, kind="stable")  # similar lengths per batch: less padding
    start = time.perf_counter()
    with no_grad():
        texts = generate_texts(model, tokenizer, data, order, batch_size=batch_size, **generation)
    outputs = [None] * len(pairs)
    for i, text in zip(order, texts):
        outputs[i] = text
    return outputs, time.perf_counter() - start


def generated_outputs(model, tokenizer, pairs, packages, *, saved=None, model_id="", **kwargs):
    """``generate_split``'s outputs, kept in the JSON file ``saved`` when one is named: a later evaluation of the
    same rows with the same model folder (``model_id``) and settings reads them back instead of generating again
    (a full evaluation takes tens of minutes on a CPU; scoring the texts another way then takes seconds)."""
    key = {"model": model_id, "packages": packages,
           "sources": [s for s, _ in pairs], **kwargs["generation"], "max_source_len": kwargs["max_source_len"]}
    if saved and Path(saved).is_file():
        record = json.loads(Path(saved).read_text(encoding="utf-8"))
        if record["key"] == key:
            return record["outputs"], record["seconds"]
    outputs, seconds = generate_split(model, tokenizer, pairs, **kwargs)
    if saved:
        write_json(saved, {"key": key, "outputs": outputs, "seconds": seconds})
    return outputs, seconds


def learn_truecase(data_dir):
    """The truecasing table of the synopses in ``data_dir``/train.jsonl (None when there is no such file)."""
    path = Path(data_dir) / "train.jsonl"
    return Truecaser.learn(t for _, t in read_jsonl(path)) if path.is_file() else None


class CasedTokenizer:
    """rouge-score's tokenizer with the case kept, for ``RougeScorer(tokenizer=...)``: the same tokens (runs of
    ASCII letters and digits) and Porter stems (of words over 3 letters), each marked with where its capitals are,
    so ``Libraries`` matches ``Library`` but neither matches ``library``. Scores are never above the
    case-insensitive ones, and equal them when the two texts agree on every capital."""

    def __init__(self):
        from nltk.stem import porter  # noqa: PLC0415 - rouge-score's stemmer (rouge-score depends on nltk)
        self.stemmer = porter.PorterStemmer()

    def tokenize(self, text):
        tokens = []
        for word in re.sub(r"[^A-Za-z0-9]+", " ", text).split():
            stem = self.stemmer.stem(word.lower()) if len(word) > 3 else word.lower()
            capitals = ",".join(str(i) for i, c in enumerate(word) if c.isupper())
            tokens.append(f"{stem}^{capitals}" if capitals else stem)
        return tokens


def load_cased_rouge():
    """A scorer like ``load_rouge()``'s that compares capitals too (``CasedTokenizer``)."""
    load_rouge()  # the ImportError with the fix when rouge-score is missing
    from rouge_score import rouge_scorer  # noqa: PLC0415
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=CasedTokenizer())


def evaluate_split(model, tokenizer, path, *, limit=None, beams=4, max_new_tokens=32, no_repeat_ngram_size=0,
                   batch_size=32, max_source_len=128, scorer=None, cased_scorer=None, truecase=None, saved=None,
                   model_id=""):
    """One split's entry of metrics.json (see the module docstring); ``truecase``: a Truecaser, or None to score
    the outputs as decoded; ``saved``: see ``generated_outputs``."""
    baseline = debian_data().baseline
    pairs = read_jsonl(path)
    packages = [p for p, _ in read_jsonl(path, source_field="package")]
    total, rows = len(pairs), spread(len(pairs), limit)
    pairs, packages = [pairs[i] for i in rows], [packages[i] for i in rows]
    generation = {"num_beams": beams, "max_new_tokens": max_new_tokens, "no_repeat_ngram_size": no_repeat_ngram_size}
    raw, seconds = generated_outputs(model, tokenizer, pairs, packages, saved=saved, model_id=model_id,
                                     generation=generation, batch_size=batch_size, max_source_len=max_source_len)
    outputs = [truecase(text, source) for text, (source, _) in zip(raw, pairs)] if truecase else raw
    references = [t for _, t in pairs]
    baselines = [baseline(s) for s, _ in pairs]
    scorer, cased_scorer = scorer or load_rouge(), cased_scorer or load_cased_rouge()
    model_rows, base_rows = rouge_rows(outputs, references, scorer), rouge_rows(baselines, references, scorer)
    model_scores, base_scores = mean_rouge(model_rows), mean_rouge(base_rows)
    examples = [{"package": packages[i], "source": pairs[i][0][:200], "reference": references[i],
                 "model": outputs[i], "model_raw": raw[i], "baseline": baselines[i]}
                for i in spread(len(pairs), EXAMPLES)]
    settings = {**generation, "max_source_len": max_source_len, "limit": limit, "total": total,
                "seconds": round(seconds, 1), "truecased": truecase is not None}
    cased = {"model": outputs, "model_raw": raw, "baseline": baselines}
    return {"n": len(pairs), "model": model_scores, "baseline": base_scores,
            "gap_rougeL": model_scores["rougeL"] - base_scores["rougeL"],
            "gap_rougeL_ci95": paired_bootstrap(model_rows["rougeL"], base_rows["rougeL"]), "settings": settings,
            "examples": examples, "model_raw": mean_rouge(rouge_rows(raw, references, scorer)),
            "case_sensitive": {who: mean_rouge(rouge_rows(texts, references, cased_scorer))
                               for who, texts in cased.items()}}


def evaluate(model_dir, data_dir, out, *, splits=SPLITS, generated=None, **kwargs):
    """Score every split, write ``out`` (metrics.json) and return its content; ``generated``: a directory that
    keeps each split's generated texts ({split}.json, see ``generated_outputs``)."""
    model = EncoderDecoderModel.from_pretrained(model_dir).eval()
    tokenizer = Tokenizer.from_pretrained(model_dir)
    scorer, cased_scorer, truecase = load_rouge(), load_cased_rouge(), learn_truecase(data_dir)
    if generated:
        os.makedirs(generated, exist_ok=True)
    metrics = {split: evaluate_split(model, tokenizer, os.path.join(data_dir, f"{split}.jsonl"), scorer=scorer,
                                     cased_scorer=cased_scorer, truecase=truecase,
                                     saved=generated and os.path.join(generated, f"{split}.json"),
                                     model_id=str(Path(model_dir).resolve()), **kwargs)
               for split in splits}
    write_json(out, metrics)
    return metrics


def interval_cell(interval):
    """``[low, high]`` as "+9.1 to +10.9" (x 100), or "n/a" for metrics written before intervals were."""
    return "n/a" if interval is None else f"{100 * interval[0]:+.1f} to {100 * interval[1]:+.1f}"


def metrics_table(metrics):
    """The markdown table of model vs baseline, ROUGE F-measures x 100 (the gap with two decimals)."""
    head = ["split", "n", *(f"model R-{k[5:]}" for k in ROUGE_TYPES), *(f"baseline R-{k[5:]}" for k in ROUGE_TYPES),
            "R-L gap", "95% interval"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for split, m in metrics.items():
        cells = [split, str(m["n"]), *(f"{100 * m['model'][k]:.1f}" for k in ROUGE_TYPES),
                 *(f"{100 * m['baseline'][k]:.1f}" for k in ROUGE_TYPES),
                 f"{100 * m['gap_rougeL']:+.2f}",  # two decimals: +9.97 must not read as the aim of +10
                 interval_cell(m.get("gap_rougeL_ci95"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def casing_table(metrics):
    """The markdown table of ROUGE x 100 (two decimals) of the outputs as decoded and truecased, case-insensitive
    and case-sensitive, with the baseline's case-sensitive scores beside; None for metrics without them."""
    if not all("model_raw" in m and "case_sensitive" in m for m in metrics.values()):
        return None
    scores = lambda s: " / ".join(f"{100 * s[k]:.2f}" for k in ROUGE_TYPES)  # noqa: E731
    head = ["split", "n", "case-insensitive, as decoded", "case-insensitive, truecased", "case-sensitive, as decoded",
            "case-sensitive, truecased", "baseline, case-sensitive"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for split, m in metrics.items():
        cased = m["case_sensitive"]
        cells = [split, str(m["n"]), scores(m["model_raw"]), scores(m["model"]), scores(cased["model_raw"]),
                 scores(cased["model"]), scores(cased["baseline"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- export

def float16_tensors(model, *, include_tied_copies):
    """The state dict with every floating tensor cast to float16; ExportError when one does not fit."""
    out = {}
    for key, array in model.state_dict(include_tied_copies=include_tied_copies).items():
        if np.issubdtype(array.dtype, np.floating):
            with np.errstate(over="ignore"):
                array = array.astype(np.float16)
            if not np.isfinite(array).all():
                raise ExportError(f"{key} overflows float16 (largest |value| {np.abs(array).max()})")
        out[key] = array
    return out


def safetensors_bytes(tensors):
    """The exact size of the model.safetensors these tensors make."""
    return len(safetensors.numpy.save(tensors, metadata={"format": "pt", **METADATA}))


def greedy_ids(model, tokenizer, sources, max_new_tokens, max_source_len=128):
    batch = tokenizer(sources, max_length=max_source_len)
    with no_grad():
        out = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], num_beams=1,
                             max_new_tokens=max_new_tokens, no_repeat_ngram_size=0)  # plain greedy: weights only
    return [[t for t in row if t != model.generation_config.pad_token_id] for row in to_numpy(out).tolist()]


def reload_check(source_model, tokenizer, path, sources, max_new_tokens=32, max_source_len=128):
    """Load ``path`` in seq2seq (float16 -> float32) and compare greedy outputs with ``source_model``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = EncoderDecoderModel.from_pretrained(path)
    info = model.loading_info
    if info["missing_keys"] or info["unexpected_keys"] or model.num_parameters() != source_model.num_parameters():
        raise ExportError(f"the export does not reload as the same model: {info}, {[str(w.message) for w in caught]}")
    ours = greedy_ids(source_model, tokenizer, sources, max_new_tokens, max_source_len)
    theirs = greedy_ids(model, tokenizer, sources, max_new_tokens, max_source_len)
    same = sum(a == b for a, b in zip(ours, theirs))
    differing = [{"source": s[:80], "float32": tokenizer.decode(a), "float16": tokenizer.decode(b)}
                 for s, a, b in zip(sources, ours, theirs) if a != b]
    return model, {"examples": len(sources), "identical": same, "differing": differing}


def readme_recipe():
    """The commands of the project README's "Fine-tuning" section (its indented blocks: the one-command recipe,
    then the steps it runs), else RECIPE."""
    try:
        text = (HERE.parent / "README.md").read_text(encoding="utf-8")
        section = text.split("## Fine-tuning", 1)[1].split("\n## ", 1)[0]
    except (OSError, IndexError):
        return RECIPE
    blocks, current = [], []
    for line in section.splitlines():
        if line.startswith("    ") and line.strip():
            current.append(line[4:])
        elif current and line.strip():  # prose after a block ends it
            blocks.append("\n".join(current))
            current = []
    if current:
        blocks.append("\n".join(current))
    return "\n\n".join(blocks) or RECIPE


def read_stats(data_dir):
    for name in ("stats.json", "full_stats.json"):
        path = Path(data_dir or "") / name
        if data_dir and path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return None


def cell(text):
    return " ".join(str(text).split()).replace("|", "\\|")


def training_summary(history, *, training_time=None):
    """One training run's hyper-parameters (a table), steps, time and last validation, for the card."""
    args = history.get("args", {})
    table = ("| hyper-parameter | value |\n|---|---|\n"
             + "\n".join(f"| {k} | {v} |" for k, v in args.items()
                         if v is not None and not (k == "epochs" and args.get("max_steps"))) + "\n")
    seconds = history.get("train_seconds")  # summed over the chunks of a resumed run
    time_text = training_time or (f"{format_seconds(seconds)} in training steps (evaluations and checkpoint "
                                  "writes not counted)" if seconds else "not recorded in history.json")
    line = f"Steps: {stage_steps(history):,}. Training time: {time_text}."
    if history.get("eval"):
        last = history["eval"][-1]
        line += (f" Last validation (step {last['step']}): loss {last['loss']:.4f}"
                 + "".join(f", {k} {100 * last[k]:.1f}" for k in ROUGE_TYPES if k in last) + ".")
    if history.get("note"):  # a stage record kept in weights/histories/ (see stage_steps)
        line += f" {history['note']}"
    return table + "\n" + line + "\n"


def stage_steps(history):
    """A stage's optimiser steps: the length of its loss curve, or "steps" in a record that kept no curve (the
    reconstructed records of weights/histories/, whose run folders are gone)."""
    return history["steps"] if "steps" in history else len(history.get("loss", []))


def how_to_run(name, *, demo, settings, copies, truecased):
    """The card's "How to run it": the summarize command and what it prints, then Python with seq2seq and with
    transformers."""
    cut = f"cut to model_max_length = {settings.get('max_source_len')} tokens"
    generate = (f"ids = model.generate(batch[\"input_ids\"], attention_mask=batch[\"attention_mask\"], "
                f"num_beams={settings.get('num_beams', 4)}, max_new_tokens={settings.get('max_new_tokens', 32)})\n")
    if truecased:
        changed = demo["output"] != demo["decoded"]
        printed = (f"prints `{demo['output']}`"
                   + (f"; the model itself writes `{demo['decoded']}`." if changed else
                      ", which truecasing left as the model decoded it.")
                   + " Its vocabulary is uncased: `summarize` restores capitals, accents and spacing from the "
                   "description and from the training synopses (truecase.json, see Results; `--no-truecase` "
                   "prints the text as decoded).")
        imports = "from seq2seq import EncoderDecoderModel, Tokenizer\nfrom seq2seq.models.truecase import Truecaser\n"
        show = ("text = tok.batch_decode(ids, skip_special_tokens=True)[0]             # lower case, WordPiece's "
                f"spacing\nprint(Truecaser.from_pretrained(\"weights/{name}\")(text, description))   # as summarize "
                "prints it\n")
    else:
        printed = f"prints `{demo['output']}`."
        imports = "from seq2seq import EncoderDecoderModel, Tokenizer\n"
        show = "print(tok.batch_decode(ids, skip_special_tokens=True))\n"
    python = (imports + f"model = EncoderDecoderModel.from_pretrained(\"weights/{name}\")   # float16 widened to "
              f"float32\ntok = Tokenizer.from_pretrained(\"weights/{name}\")\nbatch = tok([description])   # {cut}\n"
              + generate + show)
    hf = ("import torch, transformers\n"
          f"model = transformers.EncoderDecoderModel.from_pretrained(\"weights/{name}\", dtype=torch.float32)\n"
          + ("" if copies else
             "# transformers warns that decoder.* weights are missing (\"newly initialized\"): they are the\n"
             "# shared weights, stored once under encoder.*; this line copies them over\n"
             "model.decoder.bert.load_state_dict(model.encoder.state_dict(), strict=False)\n")
          + f"tok = transformers.AutoTokenizer.from_pretrained(\"weights/{name}\")\n")
    indent = lambda text: "".join(f"    {line}\n" for line in text.splitlines())  # noqa: E731
    return ["## How to run it\n",
            f"    python -m seq2seq summarize --model weights/{name} {shlex.quote(demo['source'])}\n",
            printed + " In Python:\n", indent(python),
            "With transformers (5.x), which ignores `tie_encoder_decoder`:\n", indent(hf)]


def model_card(name, *, model, metrics, histories, stats, sizes, copies, check, demo, training_time, max_mb):
    enc = model.config.encoder
    m = metrics.get("test_unseen_family") or next(iter(metrics.values()))
    settings = m.get("settings", {})
    truecased = settings.get("truecased", False)
    dd = debian_data()
    out = ["---\nlanguage: en\nlibrary_name: seq2seq\npipeline_tag: summarization\n"
           "base_model: sentence-transformers/all-MiniLM-L6-v2\ntags: [bert2bert, encoder-decoder, debian]\n---\n",
           f"# {name}\n",
           "A bert2bert summariser that turns a Debian package's long description into its one-line synopsis "
           "(the short `Description:` line). Encoder and decoder are all-MiniLM-L6-v2, warm-started with shared "
           f"weights and a vocabulary trimmed to the Debian corpus ({enc.vocab_size:,} tokens), "
           f"{model.num_parameters() / 1e6:.1f}M parameters, fine-tuned with the NumPy trainer of this project "
           "(`seq2seq`).\n",
           *how_to_run(name, demo=demo, settings=settings, copies=copies, truecased=truecased),
           "## Data\n",
           "Debian 12 \"bookworm\" (main, bookworm-updates, bookworm-security) package descriptions from the "
           "archive's `Translation-en` files, built by `weights/debian_data.py`: source = the long description as "
           "plain text, target = the synopsis; one pair per package, duplicate synopses dropped. The texts belong "
           "to each package's maintainers and are covered by that package's licence terms.\n"]
    if stats:
        counts = stats["counts"]
        out.append("| split | pairs |\n|---|---|\n" + "\n".join(f"| {s} | {counts[s]:,} |" for s in counts) + "\n")
        out.append(f"{stats.get('families', '?'):,} package families, {len(stats.get('families_held_out', [])):,} "
                   "of them held out.\n")
    out.append(f"Split rule: a package's *family* is its source package name (binary name when unknown) with "
               f"ecosystem prefixes (lib, python3-, golang-github-, ...) and version suffixes stripped "
               f"(`family()`); sha256 of the family holds out {dd.HELD_OUT_FAMILIES_PER_MILLE / 10:g}% of families "
               f"as `test_unseen_family`, so no sibling of those packages is seen in training. The rest go "
               f"{dd.TRAIN_PERCENT}/{dd.VALIDATION_PERCENT}/{100 - dd.TRAIN_PERCENT - dd.VALIDATION_PERCENT} to "
               "train/validation/test by sha256 of the package name.\n")
    out += ["## Recipe\n", "\n".join("    " + line for line in readme_recipe().splitlines()) + "\n"]
    for i, history in enumerate(histories):
        if len(histories) > 1:
            default = "from the trimmed warm start" if i == 0 else f"continued from stage {i}'s final model"
            start = history.get("started_from") or default
            out.append(f"Stage {i + 1} of {len(histories)}: {start}.\n")
        out.append(training_summary(history, training_time=training_time if len(histories) == 1 else None))
    if len(histories) > 1:
        seconds = [h.get("train_seconds") for h in histories]
        total = f"{format_seconds(sum(seconds))} in training steps" if all(seconds) else "not recorded for every stage"
        out.append(f"In all: {sum(stage_steps(h) for h in histories):,} steps; {total}.\n")
    if not histories and training_time:
        out.append(f"Training time: {training_time}.\n")
    out += ["## Results\n",
            f"ROUGE F-measures x 100 (rouge-score, stemming on), beam search with {settings.get('num_beams')} beams "
            f"and at most {settings.get('max_new_tokens')} new tokens"
            + (f", no {settings['no_repeat_ngram_size']}-gram twice in an output (`no_repeat_ngram_size`)"
               if settings.get("no_repeat_ngram_size") else "")
            + f", sources cut to {settings.get('max_source_len')} tokens. Baseline: the first sentence of the "
            "description cut to 12 words (`baseline()` in weights/debian_data.py). The 95% interval of the R-L "
            "gap is a paired bootstrap over the split's rows: how far the gap could move on another set of "
            "packages drawn like these."
            + ("".join(f" {s}: {v['n']:,} of {v['settings']['total']:,} rows, spread evenly over the split."
                       for s, v in metrics.items() if v["n"] < v.get("settings", {}).get("total", v["n"])))
            + (" The model's outputs are scored truecased, as `summarize` prints them (below)." if truecased else "")
            + "\n", metrics_table(metrics) + "\n"]
    if truecased and casing_table(metrics):
        out += ["The model writes lower case with a space around every punctuation mark (`( python 3 )`): its "
                "WordPiece vocabulary is uncased. `summarize` and the scores above restore capitals, accents and "
                "spacing (`seq2seq/models/truecase.py`): runs of words the description contains take its spelling "
                "and spacing (`(Python 3)`, `GitLab CI`), other words the spelling most common in the training "
                "synopses (truecase.json). ROUGE-1 / ROUGE-2 / ROUGE-L x 100, of the outputs as decoded and "
                "truecased, case-insensitive (rouge-score's tokens: lower case, letters and digits) and "
                "case-sensitive (the same tokens and stems, with their capitals compared too), and the baseline's "
                "case-sensitive scores beside (it copies the description's own capitals):\n",
                casing_table(metrics) + "\n"]
    raw = " | model, as decoded" if truecased else ""
    out += ["## Examples from the unseen-family split\n",
            "Ten rows spread evenly over the split (rows i x n / 10), not chosen.\n",
            f"| package | description (first 200 chars) | synopsis | model{raw} | baseline |\n"
            + "|---" * (6 if truecased else 5) + "|\n"
            + "\n".join(f"| {cell(e['package'])} | {cell(e['source'])} | {cell(e['reference'])} | "
                        f"{cell(e['model'])} | " + (f"{cell(e['model_raw'])} | " if truecased else "")
                        + f"{cell(e['baseline'])} |" for e in m["examples"]) + "\n",
            "## Files\n",
            f"`model.safetensors` holds every floating tensor in float16 ({sizes[copies] / MB:.1f} MB). "
            "`config.json` keeps `tie_encoder_decoder: true`: the encoder and decoder share one set of weights, "
            f"stored once under `encoder.*` ({sizes[False] / MB:.1f} MB). Writing the decoder's copies as well, "
            f"which transformers 5 needs because it ignores the flag, would make {sizes[True] / MB:.1f} MB; the "
            f"limit is {max_mb:g} MB, so the copies are "
            + ("written (transformers loads the folder as is).\n" if copies else
               "not written, and transformers users copy the encoder's weights into the decoder after loading "
               "(see above); seq2seq ties them itself.\n"),
            f"Reload check: seq2seq loads this folder (float16 widened to float32) and its greedy outputs equal the "
            f"float32 model's on {check['identical']} of {check['examples']} examples.\n",
            "## Limitations\n",
            "Trained on Debian's English descriptions only; the synopses it writes follow Debian's style (short, "
            "no article, no final period) and can be wrong about what a package does. Not for other text.\n",
            "_Written by `weights/default_model.py export`._\n"]
    return "\n".join(out)


def card_demo(shipped, tokenizer, truecase, metrics):
    """The card's command-line example: the first unseen-family example whose description is whole (under 200
    characters), and what `summarize --model` prints for it with the exported folder (``shipped``, its tokenizer
    and its truecasing table, or None)."""
    shown = (metrics.get("test_unseen_family") or next(iter(metrics.values())))["examples"]
    whole = [e["source"] for e in shown if len(e["source"]) < 200]  # a description not cut at 200 chars
    source = (whole or [e["source"] for e in shown] or ["A command-line tool to convert images."])[0]
    source = " ".join(source.split())  # as the card's command line passes it
    with no_grad():
        ids = shipped.generate(tokenizer([source])["input_ids"])  # the folder's generation_config.json
    decoded = tokenizer.batch_decode(ids, skip_special_tokens=True)[0]
    return {"source": source, "decoded": decoded, "output": truecase(decoded, source) if truecase else decoded}


def export(model_dir, metrics_path, out, name, *, history=None, data=None, max_mb=MAX_MB, tied_copies="auto",
           training_time=None, check_examples=5):
    """Write the shipped model folder (see the module docstring); returns a summary dict."""
    model = EncoderDecoderModel.from_pretrained(model_dir).eval()
    tokenizer = Tokenizer.from_pretrained(model_dir)
    metrics = json.loads(Path(metrics_path).read_text(encoding="utf-8"))
    paths = [history] if isinstance(history, (str, os.PathLike)) else list(history or ())
    histories = [json.loads(Path(path).read_text(encoding="utf-8")) for path in paths]  # one per training stage
    limit = int(max_mb * MB)
    tensors = {c: float16_tensors(model, include_tied_copies=c) for c in (False, True)}
    sizes = {c: safetensors_bytes(t) for c, t in tensors.items()}
    copies = {"auto": sizes[True] <= limit, "yes": True, "no": False}[tied_copies]
    if sizes[copies] > limit:
        raise ExportError(f"model.safetensors would be {sizes[copies] / MB:.1f} MB, over the {max_mb:g} MB limit "
                          f"(stored once: {sizes[False] / MB:.1f} MB, with tied copies: {sizes[True] / MB:.1f} MB)")
    sources = [e["source"] for split in metrics.values() for e in split["examples"]][:check_examples]
    truecase = learn_truecase(data) if data else None
    if truecase is None and any(m.get("settings", {}).get("truecased") for m in metrics.values()):
        raise ExportError(f"{metrics_path} scored truecased outputs, but there is no "
                          f"{Path(data or '.', 'train.jsonl')} to learn the truecasing table from (--data: the "
                          "directory evaluate was given)")
    with atomic_directory(out) as tmp:
        config = model.config.to_dict()
        config["dtype"] = "float16"
        write_json(os.path.join(tmp, "config.json"), config)
        evaluated = (metrics.get("test_unseen_family") or next(iter(metrics.values()))).get("settings", {})
        generation = {k: evaluated[k] for k in GENERATE_SETTINGS if evaluated.get(k)}
        write_json(os.path.join(tmp, "generation_config.json"),  # generate() defaults to the evaluated settings
                   {**{k: v for k, v in model.generation_config.to_diff_dict().items()
                       if k != "_from_model_config"}, **generation})  # not derived from config.json any more
        save_state_dict(tensors[copies], tmp, metadata=METADATA)
        source_len = evaluated.get("max_source_len")
        if source_len:  # tok(texts) truncates sources as the evaluation did (as on the Hub)
            tokenizer.model_max_length = source_len
        tokenizer.save_pretrained(tmp)
        if truecase:  # summarize prints the outputs as they were scored
            truecase.save_pretrained(tmp)
        os.chmod(os.path.join(tmp, "model.safetensors"), 0o644)  # safetensors writes 0600
        written = os.path.getsize(os.path.join(tmp, "model.safetensors"))
        if written > limit:
            raise ExportError(f"{written / MB:.1f} MB written, over the {max_mb:g} MB limit")
        shipped, check = reload_check(model, tokenizer, tmp, sources, max_source_len=source_len or 128)
        demo = card_demo(shipped, Tokenizer.from_pretrained(tmp), truecase, metrics)
        card = model_card(name, model=model, metrics=metrics, histories=histories, stats=read_stats(data), sizes=sizes,
                          copies=copies, check=check, demo=demo, training_time=training_time, max_mb=max_mb)
        Path(tmp, "README.md").write_text(card, encoding="utf-8")
    total = sum(p.stat().st_size for p in Path(out).iterdir())
    return {"out": str(out), "tied_copies": copies, "sizes": sizes, "safetensors_bytes": written,
            "folder_bytes": total, "check": check}


# ---------------------------------------------------------------------------------------------- command line

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ev = commands.add_parser("evaluate", help="ROUGE of the model and of the baseline on the test splits")
    ev.add_argument("--model", required=True)
    ev.add_argument("--data", required=True, help="directory of {split}.jsonl files")
    ev.add_argument("--splits", default=",".join(SPLITS))
    ev.add_argument("--limit", type=int, help="rows per split, spread evenly (default: all)")
    ev.add_argument("--beams", type=int, default=4)
    ev.add_argument("--max-new-tokens", type=int, default=32)
    ev.add_argument("--no-repeat-ngram-size", type=int, default=0, help="no n-gram of this size twice in an output")
    ev.add_argument("--max-source-len", type=int, default=128)
    ev.add_argument("--batch-size", type=int, default=32, help="sources per generate call")
    ev.add_argument("--out", required=True, help="metrics.json to write")
    ev.add_argument("--generated", help="directory keeping the generated texts: reused when rows and settings match")
    ex = commands.add_parser("export", help="float16 safetensors + tokenizer + model card")
    ex.add_argument("--model", required=True)
    ex.add_argument("--metrics", required=True, help="metrics.json written by evaluate")
    ex.add_argument("--history", action="append", default=[],
                    help="OUT/history.json of the training run; once per stage, in order, for a run in stages")
    ex.add_argument("--data", default="/work/data/debian",
                    help="data directory: its stats.json gives the sizes, its train.jsonl the truecasing table")
    ex.add_argument("--out", required=True)
    ex.add_argument("--name", required=True)
    ex.add_argument("--max-mb", type=float, default=MAX_MB, help="size limit of model.safetensors (MB = 1e6 bytes)")
    ex.add_argument("--tied-copies", choices=("auto", "yes", "no"), default="auto")
    ex.add_argument("--training-time", help="training time for the card when history.json does not record it")
    tc = commands.add_parser("truecase", help="write truecase.json, the truecasing table, into a model folder")
    tc.add_argument("--data", required=True, help="data directory whose train.jsonl synopses the table is learned from")
    tc.add_argument("--out", required=True, help="the model folder")
    args = parser.parse_args(argv)
    try:
        if args.command == "evaluate":
            metrics = evaluate(args.model, args.data, args.out, splits=args.splits.split(","), limit=args.limit,
                               beams=args.beams, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                               no_repeat_ngram_size=args.no_repeat_ngram_size,
                               max_source_len=args.max_source_len, generated=args.generated)
            print(metrics_table(metrics))
            print("\nROUGE-1 / ROUGE-2 / ROUGE-L x 100 of the outputs as decoded and truecased:")
            print(casing_table(metrics))
            print(f"wrote {args.out}", file=sys.stderr)
        elif args.command == "truecase":
            truecase = learn_truecase(args.data)
            if truecase is None:
                sys.exit(f"error: {Path(args.data, 'train.jsonl')} does not exist")
            truecase.save_pretrained(args.out)
            sizes = ", ".join(f"{len(v):,} {k}" for k, v in truecase.to_dict().items())
            print(f"wrote {Path(args.out, 'truecase.json')}: {sizes}", file=sys.stderr)
        else:
            result = export(args.model, args.metrics, args.out, args.name, history=args.history, data=args.data,
                            max_mb=args.max_mb, tied_copies=args.tied_copies, training_time=args.training_time)
            sizes, check = result["sizes"], result["check"]
            print(f"model.safetensors stored once: {sizes[False] / MB:.2f} MB, with tied copies: "
                  f"{sizes[True] / MB:.2f} MB (limit {args.max_mb:g} MB) -> tied copies "
                  f"{'written' if result['tied_copies'] else 'not written'}; "
                  f"folder {result['folder_bytes'] / MB:.2f} MB")
            print(f"reload check: greedy outputs identical on {check['identical']}/{check['examples']} examples")
            for d in check["differing"]:
                print(f"  differs: {d}")
            print(f"wrote {result['out']}", file=sys.stderr)
    except (ExportError, InputError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
