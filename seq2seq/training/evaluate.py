"""Evaluation of a summarising model: its loss on held-out pairs, and ROUGE of the text it generates.

    result = evaluate(model, tokenizer, validation, rouge_examples=200, num_beams=4, max_new_tokens=32)
    # {"loss": 2.31, "rouge1": 0.45, "rouge2": 0.23, "rougeL": 0.41, "examples": 200, "samples": [...]}

The loss is the mean cross-entropy over every labelled token of the validation set (each batch's mean weighted
by its token count, so it does not depend on how the set is cut into batches). ROUGE-1/2/L are the F-measures of
Google's ``rouge-score`` package (stemming on, as the summarisation literature reports them) between the
generated text of the first ``rouge_examples`` sources and their reference targets, averaged. ``rouge-score`` is
an optional dependency (``pip install rouge-score``), imported only when scores are asked for.

``rouge_rows`` keeps each row's score, and ``paired_bootstrap`` turns two systems' row scores into an interval
for the gap between their means: a gap of 0.3 points on a thousand rows is within what another sample of rows
would move, and an aim such as "at least 10 points above the baseline" is best read beside that interval.
"""
import numpy as np

from ..core.autograd import no_grad
from .console import progress_bar
from .data import IGNORE_INDEX

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def load_rouge():
    """A ``rouge_score`` scorer for ROUGE-1/2/L with stemming; ImportError with the fix when not installed."""
    try:
        from rouge_score import rouge_scorer  # noqa: PLC0415 - optional: only evaluation needs it
    except ImportError as err:
        raise ImportError("ROUGE scores need the rouge-score package: pip install rouge-score "
                          "(or pip install -e \".[train]\")") from err
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def validation_loss(model, dataset, *, batch_size=64, stream=None):
    """Mean cross-entropy per labelled token over the whole dataset, dropout off; a progress bar on ``stream``
    (default stderr) where tqdm shows one."""
    order = np.argsort(dataset.source_lengths, kind="stable")  # similar lengths together: less padding
    total, count = 0.0, 0
    with no_grad(), progress_bar(total=len(order), desc="validation loss", unit="pair", stream=stream) as bar:
        for start in range(0, len(order), batch_size):
            batch = dataset.collate(order[start:start + batch_size])
            bar.update(len(order[start:start + batch_size]))
            tokens = int((batch.labels != IGNORE_INDEX).sum())
            if tokens == 0:
                continue
            out = model(batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels, pack_padding=True)
            total += float(out.loss.item()) * tokens
            count += tokens
    return total / max(count, 1)


def generate_texts(model, tokenizer, dataset, indices, *, batch_size=64, stream=None, **generate_kwargs):
    """The model's output text for the sources ``indices`` of ``dataset``, special tokens removed; a progress bar
    on ``stream`` (default stderr) where tqdm shows one."""
    texts = []
    with progress_bar(total=len(indices), desc="generating", unit="text", stream=stream) as bar:
        for start in range(0, len(indices), batch_size):
            batch = dataset.collate(indices[start:start + batch_size])
            out = model.generate(batch.input_ids, attention_mask=batch.attention_mask, **generate_kwargs)
            texts.extend(tokenizer.batch_decode(out, skip_special_tokens=True))
            bar.update(len(indices[start:start + batch_size]))
    return texts


def rouge_rows(predictions, references, scorer=None):
    """Each row's ROUGE-1/2/L F-measure of ``predictions`` against ``references``: {name: float64 array [N]}."""
    scorer = scorer or load_rouge()
    rows = {name: np.zeros(len(predictions)) for name in ROUGE_TYPES}
    for i, (prediction, reference) in enumerate(zip(predictions, references)):
        scores = scorer.score(reference, prediction)  # rouge_score's order: (target, prediction)
        for name in ROUGE_TYPES:
            rows[name][i] = scores[name].fmeasure
    return rows


def mean_rouge(rows):
    """``rouge_rows``' result averaged over the rows: {name: float} (0.0 for no rows)."""
    return {name: float(r.mean()) if len(r) else 0.0 for name, r in rows.items()}


def rouge(predictions, references, scorer=None):
    """Mean ROUGE-1/2/L F-measures of ``predictions`` against ``references`` (lists of strings)."""
    return mean_rouge(rouge_rows(predictions, references, scorer))


def paired_bootstrap(scores, other, *, resamples=2000, level=0.95, seed=0):
    """Percentile interval of ``mean(scores) - mean(other)`` over row resamples (the same rows for both).

    How far a difference of two systems' mean scores on this set of rows could move on another set drawn like
    it: rows are drawn with replacement ``resamples`` times, and the central ``level`` of the differences of means
    is returned as ``(low, high)``. Seeded, so the same scores always give the same interval.
    """
    scores, other = np.asarray(scores, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if scores.ndim != 1 or scores.shape != other.shape or len(scores) == 0:
        raise ValueError(f"paired_bootstrap needs two equally long, non-empty lists of row scores; got shapes "
                         f"{scores.shape} and {other.shape}")
    difference = scores - other  # [N]
    rows = np.random.default_rng(seed).integers(0, len(difference), size=(resamples, len(difference)))
    means = difference[rows].mean(axis=1)  # [resamples, N] -> [resamples]
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def evaluate(model, tokenizer, dataset, *, batch_size=64, rouge_examples=200, num_beams=4, max_new_tokens=32,
             samples=3, stream=None):
    """Validation loss over ``dataset`` and ROUGE on its first ``rouge_examples`` pairs (0: loss only).

    ``batch_size`` pairs go through each forward pass of the loss, and ``batch_size // num_beams`` sources (so
    ``batch_size`` beams) through each ``generate`` call. The model is put in eval mode and returned to the mode
    it was in. ``samples`` generated texts are kept in the result, next to their sources and references, to show
    what the numbers mean. Both loops show a progress bar on ``stream`` (default stderr) where tqdm shows one.
    """
    was_training = model.training
    model.eval()
    try:
        result = {"loss": validation_loss(model, dataset, batch_size=batch_size, stream=stream)}
        n = min(rouge_examples, len(dataset))
        if n > 0:
            if not dataset.texts:
                raise ValueError("ROUGE needs the reference texts: build the dataset with from_pairs/from_jsonl")
            scorer = load_rouge()
            indices = np.arange(n)
            rows = max(1, batch_size // max(num_beams, 1))  # sources per generate call: batch_size beams in all
            predictions = generate_texts(model, tokenizer, dataset, indices, batch_size=rows, stream=stream,
                                         num_beams=num_beams, max_new_tokens=max_new_tokens)
            references = [dataset.texts[i][1] for i in indices]
            result.update(rouge(predictions, references, scorer), examples=n)
            result["samples"] = [{"source": dataset.texts[i][0], "reference": references[i],
                                  "generated": predictions[i]} for i in range(min(samples, n))]
    finally:
        if was_training:
            model.train()
    return result
