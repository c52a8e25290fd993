"""`python -m seq2seq generate --input in.jsonl --output out.jsonl`: input order, field flags, resuming after a
crash (a torn progress line included), refusing another run's progress, clear errors for bad input lines."""
import json
import os
import subprocess
import sys

import pytest

import seq2seq
import seq2seq.cli.batch
from seq2seq.cli.main import build_parser

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
TEXTS = ["the eiffel tower is in paris.", "hi", "debian is a free operating system made by volunteers",
         "a small engine", "numpy arrays on the cpu and cupy arrays on the gpu, with the same code",
         "hello world", "tools for the command line"]


def generate(*argv):
    """The command in this process (a subprocess only where a test needs one)."""
    args = build_parser().parse_args(["generate", *map(str, argv)])
    args.run(args)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def one_by_one(model, tok, texts, **kwargs):
    outs = []
    for text in texts:
        batch = tok([text])
        ids = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
        decoded = tok.batch_decode(ids, skip_special_tokens=True)
        outs.append(decoded if len(decoded) > 1 else decoded[0])
    return outs


def test_outputs_in_input_order_equal_generate_per_line(tiny_model_dir, tmp_path):
    path, model, tok = tiny_model_dir
    src = write_jsonl(tmp_path / "in.jsonl", [{"source": t, "n": k} for k, t in enumerate(TEXTS)])
    out = tmp_path / "out.jsonl"
    generate("--model", path, "--input", src, "--output", out, "--batch-size", 3, "--max-new-tokens", 6)
    rows = read_jsonl(out)
    assert [row["n"] for row in rows] == list(range(len(TEXTS)))
    assert [row["source"] for row in rows] == TEXTS
    assert [row["generated_text"] for row in rows] == one_by_one(model, tok, TEXTS, max_new_tokens=6)
    assert not os.path.exists(str(out) + ".partial")


def test_dtype_flag_loads_the_model_in_that_type_and_decides_the_progress_header(tiny_model_dir, tmp_path):
    path, _, tok = tiny_model_dir
    src = write_jsonl(tmp_path / "in.jsonl", [{"source": t} for t in TEXTS[:4]])
    out = tmp_path / "out.jsonl"
    generate("--model", path, "--input", src, "--output", out, "--max-new-tokens", 5, "--dtype", "float64")
    wide = seq2seq.EncoderDecoderModel.from_pretrained(path, dtype="float64")
    assert [row["generated_text"] for row in read_jsonl(out)] == one_by_one(wide, tok, TEXTS[:4], max_new_tokens=5)
    flags = ["generate", "--model", path, "--input", src, "--output", out]
    headers = [seq2seq.cli.batch.run_header(build_parser().parse_args([*map(str, flags), *more]), {})
               for more in ([], ["--dtype", "float16"])]
    assert headers[0]["dtype"] == "float32" and headers[1]["dtype"] == "float16"


def test_plan_batches_sorts_by_length_and_covers_every_line():
    batches = seq2seq.cli.batch.plan_batches([3, 9, 1, 9, 5], batch_size=2)
    assert batches == [[1, 3], [4, 0], [2]]


def test_field_flags_and_num_return_sequences(tiny_model_dir, tmp_path):
    path, model, tok = tiny_model_dir
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"x{k}", "article": t, "other": 1} for k, t in
                                              enumerate(TEXTS[:3])])
    out = tmp_path / "out.jsonl"
    generate("--model", path, "--input", src, "--output", out, "--source-field", "article", "--output-field",
             "summary", "--id-field", "id", "--num-beams", 2, "--num-return-sequences", 2, "--max-new-tokens", 5)
    rows = read_jsonl(out)
    assert [sorted(row) for row in rows] == [["id", "summary"]] * 3  # --id-field: the id and the output only
    assert [row["id"] for row in rows] == ["x0", "x1", "x2"]
    assert [row["summary"] for row in rows] == one_by_one(model, tok, TEXTS[:3], num_beams=2,
                                                          num_return_sequences=2, max_new_tokens=5)


def test_resume_after_a_crash_and_a_torn_line_equals_an_uninterrupted_run(tiny_model_dir, tmp_path, monkeypatch):
    path, _, _ = tiny_model_dir
    src = write_jsonl(tmp_path / "in.jsonl", [{"source": t} for t in TEXTS])
    whole, out = tmp_path / "whole.jsonl", tmp_path / "out.jsonl"
    flags = ("--model", path, "--input", src, "--batch-size", 2, "--max-new-tokens", 6)
    generate(*flags, "--output", whole)

    real = seq2seq.cli.batch.run_batches
    seen = []

    def crashing(*args, **kwargs):
        for results in real(*args, **kwargs):
            if len(seen) == 2:
                raise KeyboardInterrupt  # killed during the third batch
            seen.append([i for i, _ in results])
            yield results
    monkeypatch.setattr(seq2seq.cli.batch, "run_batches", crashing)
    with pytest.raises(KeyboardInterrupt):
        generate(*flags, "--output", out)
    monkeypatch.undo()
    partial = tmp_path / "out.jsonl.partial"
    assert not out.exists() and len(partial.read_text().splitlines()) == 1 + 4
    with open(partial, "a", encoding="utf-8") as f:  # a kill in the middle of writing a line
        f.write('{"index": 5, "outp')

    started = []
    monkeypatch.setattr(seq2seq.cli.batch, "run_batches",
                        lambda model, tok, sources, batches, *a, **k: started.extend(batches) or real(
                            model, tok, sources, batches, *a, **k))
    generate(*flags, "--output", out)
    assert out.read_bytes() == whole.read_bytes()
    assert not partial.exists()
    assert not {i for batch in seen for i in batch} & {i for batch in started for i in batch}  # none done twice


def test_a_partly_written_batch_is_finished_without_repeating_a_line(tiny_model_dir, tmp_path):
    path, _, _ = tiny_model_dir
    src = write_jsonl(tmp_path / "in.jsonl", [{"source": t} for t in TEXTS])
    whole, out = tmp_path / "whole.jsonl", tmp_path / "out.jsonl"
    flags = ("--model", path, "--input", src, "--batch-size", 4, "--max-new-tokens", 6)
    generate(*flags, "--output", whole)
    header = seq2seq.cli.batch.run_header(build_parser().parse_args(["generate", *map(str, flags), "--output",
                                                                     str(out)]), {"max_new_tokens": 6})
    first = read_jsonl(whole)[1]["generated_text"]  # index 1 as if its batch was cut after one line
    write_jsonl(tmp_path / "out.jsonl.partial", [{"header": header}, {"index": 1, "output": first}])
    generate(*flags, "--output", out)
    assert out.read_bytes() == whole.read_bytes()


def test_progress_of_other_arguments_is_refused(tiny_model_dir, tmp_path):
    path, _, _ = tiny_model_dir
    src = write_jsonl(tmp_path / "in.jsonl", [{"source": t} for t in TEXTS[:3]])
    out = tmp_path / "out.jsonl"
    flags = ["--model", path, "--input", src, "--output", out, "--max-new-tokens", 4]
    header = seq2seq.cli.batch.run_header(build_parser().parse_args(["generate", *map(str, flags)]),
                                          {"max_new_tokens": 4})
    write_jsonl(tmp_path / "out.jsonl.partial", [{"header": header}])  # a stopped run's progress
    with pytest.raises(seq2seq.InputError, match=r"other arguments \(differing: generation\)"):
        generate("--model", path, "--input", src, "--output", out, "--max-new-tokens", 5)
    write_jsonl(src, [{"source": t} for t in TEXTS[:2]])
    with pytest.raises(seq2seq.InputError, match="input_sha256, input_size"):
        generate("--model", path, "--input", src, "--output", out, "--max-new-tokens", 4)


@pytest.mark.parametrize("line, message", [
    ('{"source": "a"}\n{"source": "b"\n', r"in\.jsonl, line 2: not valid JSON"),
    ('{"source": "a"}\n\n{"text": "b"}\n', r"in\.jsonl, line 3: no field 'source' .*--source-field"),
    ('{"source": 3}\n', r"line 1: field 'source' is a int, expected a string"),
    ('["a"]\n', r"line 1: expected a JSON object, got list"),
])
def test_bad_input_lines_name_file_and_line(tiny_model_dir, tmp_path, line, message):
    path, _, _ = tiny_model_dir
    (tmp_path / "in.jsonl").write_text(line)
    with pytest.raises(seq2seq.InputError, match=message):
        generate("--model", path, "--input", tmp_path / "in.jsonl", "--output", tmp_path / "out.jsonl")


def test_input_with_text_arguments_is_an_error_on_the_command_line(tiny_model_dir, tmp_path):
    path, _, _ = tiny_model_dir
    src = write_jsonl(tmp_path / "in.jsonl", [{"source": "a"}])
    result = subprocess.run([sys.executable, "-m", "seq2seq", "generate", "--model", str(path), "--input", str(src),
                             "--output", str(tmp_path / "o.jsonl"), "some text"], capture_output=True, text=True,
                            cwd=str(REPO), timeout=300)
    assert result.returncode != 0 and "not both" in result.stderr
