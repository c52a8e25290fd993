"""seq2seq/evaluate.py's scoring helpers: per-row ROUGE and the paired bootstrap interval of a gap in means."""
import numpy as np
import pytest

from seq2seq.training.evaluate import paired_bootstrap, rouge, rouge_rows

PREDICTIONS = ["Command-line tool to convert images", "Python library for parsing", "", "documentation"]
REFERENCES = ["tool to convert images between formats", "Python 3 library for parsing TOML files",
              "shared library", "documentation for foo"]


def test_rouge_rows_are_the_scorers_and_rouge_is_their_mean():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    rows = rouge_rows(PREDICTIONS, REFERENCES)
    for name in ("rouge1", "rouge2", "rougeL"):
        direct = [scorer.score(r, p)[name].fmeasure for p, r in zip(PREDICTIONS, REFERENCES)]
        assert rows[name].shape == (len(PREDICTIONS),)
        np.testing.assert_allclose(rows[name], direct, rtol=0, atol=1e-15)
        assert rouge(PREDICTIONS, REFERENCES)[name] == pytest.approx(np.mean(direct), abs=1e-15)
    assert rows["rougeL"][2] == 0.0  # an empty output scores 0, it is not skipped


@pytest.mark.parametrize("n", [1, 7, 400])
def test_a_constant_difference_has_a_zero_width_interval(n):
    other = np.random.default_rng(n).random(n)
    assert paired_bootstrap(other, other) == (0.0, 0.0)
    low, high = paired_bootstrap(other + 0.25, other)
    assert low == pytest.approx(0.25) and high == pytest.approx(0.25)


def test_interval_matches_the_normal_approximation_and_is_seeded():
    rng = np.random.default_rng(0)
    n = 1600
    other = rng.random(n)
    scores = other + 0.1 + rng.normal(0.0, 1.0, n)  # paired differences: mean ~0.1, sd ~1
    difference = scores - other
    low, high = paired_bootstrap(scores, other)
    half_width = 1.96 * difference.std() / np.sqrt(n)  # the interval the central limit theorem predicts
    assert low < difference.mean() < high
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.1)
    assert (low + high) / 2 == pytest.approx(difference.mean(), abs=0.1 * half_width)
    assert paired_bootstrap(scores, other) == (low, high)  # seeded: the same scores, the same interval
    assert paired_bootstrap(scores, other, seed=1) != (low, high)
    narrow = paired_bootstrap(scores, other, level=0.5)
    assert low < narrow[0] < narrow[1] < high


@pytest.mark.parametrize("scores, other", [([0.1, 0.2], [0.1]), ([], []), ([[0.1, 0.2]], [[0.1, 0.2]])])
def test_bad_score_lists_name_their_shapes(scores, other):
    with pytest.raises(ValueError, match="paired_bootstrap needs two equally long, non-empty lists.*shapes"):
        paired_bootstrap(scores, other)
