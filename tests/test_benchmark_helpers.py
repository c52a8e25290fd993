"""The pure helpers of benchmarks/ (not a package): which descriptions shipped_model.py times, and how
ctranslate2_ref.py hands a workload to CTranslate2. Neither needs ctranslate2 installed nor a model."""
import importlib.util
import pathlib
import sys

import numpy as np
import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name):
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import common.py as a sibling
    try:
        spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


shipped = _load("shipped_model")
ct2_ref = _load("ctranslate2_ref")


@pytest.mark.parametrize("lengths, spread, median, window", [
    ([5, 1, 3], 1, 2, [2]),
    ([4, 1, 3, 2], 2, 3, [1, 3]),  # even count: the lower median (length 2, at position 3)
    ([4, 1, 3, 2], 4, 3, [1, 3, 2, 0]),  # the whole list in length order: the window held inside it
    ([7, 7, 1, 9, 7], 3, 1, [0, 1, 4]),  # ties kept in file order
    ([10, 20, 30, 40, 50, 60, 70], 3, 3, [2, 3, 4]),
])
def test_around_median(lengths, spread, median, window):
    assert shipped.around_median(lengths, spread) == (median, window)


@pytest.mark.parametrize("spread", [0, 4])
def test_around_median_rejects_a_spread_outside_the_list(spread):
    with pytest.raises(ValueError, match="spread must be 1..3"):
        shipped.around_median([1, 2, 3], spread)


@pytest.mark.parametrize("extra, expected", [
    ({}, dict(beam_size=1)),
    ({"num_beams": 4}, dict(beam_size=4)),
    ({"do_sample": True, "top_k": 50, "top_p": 0.95}, dict(beam_size=1, sampling_topk=50, sampling_topp=0.95)),
])
def test_translate_options_ask_for_exactly_new_tokens(extra, expected):
    assert ct2_ref.translate_options(extra, new=64) == dict(expected, max_decoding_length=64, min_decoding_length=64)


def test_translate_options_refuse_what_ctranslate2_would_ignore():
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        ct2_ref.translate_options({"no_repeat_ngram_size": 3}, new=8)


def test_source_tokens_drop_each_rows_padding():
    tokens = ct2_ref.vocabulary(10)
    ids = np.array([[4, 5, 6], [7, 8, 1]])
    mask = np.array([[1, 1, 1], [1, 1, 0]])
    assert ct2_ref.source_tokens(ids, mask, tokens) == [["w4", "w5", "w6"], ["w7", "w8"]]
    assert tokens[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and len(tokens) == 10
