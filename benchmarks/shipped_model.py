"""The shipped model on real Debian descriptions: milliseconds per description, ours against transformers.

    python benchmarks/shipped_model.py                 # the 50 test-split descriptions in tests/fixtures/debian
    python benchmarks/shipped_model.py --data /work/data/debian/test.jsonl   # the whole test split, if built
    python benchmarks/shipped_model.py --spread 10 --repeats 10
    python benchmarks/shipped_model.py --eager          # also our eager decode step (cuda_graph=False)

One description at a time (batch 1), as `python -m seq2seq summarize`/`generate` runs it. The description of median
token length in the split (sources cut to 128 tokens, as the model card's evaluation), then ``--spread``
descriptions around it in length order. Decoding as the card's evaluation (weights/minilm-l6-debian-synopsis/
generation_config.json: at most 32 new tokens, no 3-gram twice) with beam 4, and greedy with the same settings.
Outputs stop at eos, so the two engines do the same work only if their ids are identical: that is checked first.
transformers loads the folder as the model card shows: float32, the tied decoder copied from the encoder.
Only ``generate`` is timed (tokenizing takes well under a millisecond). With ``--eager`` the median description
also runs our eager decode step (``generate(cuda_graph=False)``) in the same rounds, against our default fused CPU
step (fast/cpu/decode_step.py), whose ids must be the eager step's.
"""
import argparse
import functools
import json
import os
import statistics
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import interleaved, machine  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "weights", "minilm-l6-debian-synopsis")
DATA = os.path.join(ROOT, "tests", "fixtures", "debian", "test.jsonl")
MAX_SOURCE_LEN = 128  # the card's evaluation cuts sources here


def around_median(lengths, spread):
    """(index of the median-length row, indices of ``spread`` rows around it), in length order (ties by position).

    With an even count the lower median is taken. The window is moved inside the list at either end.
    """
    if not 1 <= spread <= len(lengths):
        raise ValueError(f"spread must be 1..{len(lengths)}, got {spread}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    middle = (len(order) - 1) // 2
    start = min(max(middle - spread // 2, 0), len(order) - spread)
    return order[middle], order[start:start + spread]


def load_engines(path):
    """(our model, transformers' model, our tokenizer, transformers' tokenizer), both models float32, eval."""
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    import seq2seq  # noqa: PLC0415

    ours = seq2seq.EncoderDecoderModel.from_pretrained(path)  # float16 widened to float32, decoder tied
    tokenizer = seq2seq.Tokenizer.from_pretrained(path)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its report lists every decoder.* weight as "newly initialized"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hf = transformers.EncoderDecoderModel.from_pretrained(path, dtype=torch.float32).eval()
    finally:
        transformers.logging.set_verbosity(verbosity)
    # transformers 5 ignores tie_encoder_decoder: the decoder's shared weights are stored once, under encoder.*
    hf.decoder.bert.load_state_dict(hf.encoder.state_dict(), strict=False)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    return ours, hf, tokenizer, hf_tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL, help="the exported model folder")
    parser.add_argument("--data", default=DATA, help="JSONL with a 'source' field (a test split)")
    parser.add_argument("--spread", type=int, default=10, help="descriptions around the median to time as well")
    parser.add_argument("--repeats", type=int, default=10, help="interleaved rounds for the median description")
    parser.add_argument("--spread-repeats", type=int, default=3, help="interleaved rounds for each of the spread")
    parser.add_argument("--eager", action="store_true", help="also time our eager decode step on the median")
    args = parser.parse_args()
    import torch  # noqa: PLC0415

    import seq2seq  # noqa: PLC0415
    seq2seq.tune_cpu()  # as the command line does

    with open(os.path.join(args.model, "generation_config.json")) as f:
        card = json.load(f)
    common = dict(max_new_tokens=card["max_new_tokens"], no_repeat_ngram_size=card["no_repeat_ngram_size"])
    beams = card["num_beams"]
    decodings = {"greedy": dict(common, num_beams=1), f"beam {beams}": dict(common, num_beams=beams)}
    ours, hf, tokenizer, hf_tokenizer = load_engines(args.model)
    with open(args.data) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    encoded = [tokenizer([r["source"]], max_length=MAX_SOURCE_LEN)["input_ids"] for r in rows]  # each [1, T]
    lengths = [ids.shape[1] for ids in encoded]
    median, window = around_median(lengths, args.spread)

    print(f"{machine()}, torch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"{os.path.relpath(args.model, ROOT)} on {os.path.relpath(args.data, ROOT)} ({len(rows)} descriptions, "
          f"median {lengths[median]} tokens); batch 1, float32, {common}")

    def measure(i, repeats, *, eager=False):
        """{decoding: (ours s, transformers s, new tokens with eos, ids column, our eager step's s or None)} for row
        i, the runs interleaved."""
        ids = encoded[i]
        hf_ids = hf_tokenizer([rows[i]["source"]], truncation=True, max_length=MAX_SOURCE_LEN)["input_ids"]
        assert hf_ids == ids.tolist(), f"tokenizers differ on {rows[i]['package']}"
        mask = np.ones_like(ids)
        t_ids, t_mask = torch.tensor(ids), torch.tensor(mask)
        fns, checks = {}, {}
        for name, kwargs in decodings.items():
            def run_ours(kwargs=kwargs, **path):
                return ours.generate(ids, attention_mask=mask, **path, **kwargs)

            def run_hf(kwargs=kwargs):
                with torch.no_grad():
                    return hf.generate(input_ids=t_ids, attention_mask=t_mask, **kwargs).numpy()

            a, b = run_ours(), run_hf()
            checks[name] = (a.shape[1] - 1, "identical" if a.shape == b.shape and np.array_equal(a, b) else "DIFFER")
            fns[(name, "ours")], fns[(name, "hf")] = run_ours, run_hf
            if eager:
                fns[(name, "eager")] = functools.partial(run_ours, cuda_graph=False)
                assert np.array_equal(fns[(name, "eager")](), a), "the fused step's ids differ from the eager step's"
        t = interleaved(fns, repeats=repeats)
        return {name: (t[(name, "ours")], t[(name, "hf")], *checks[name], t.get((name, "eager")))
                for name in decodings}

    print(f"\nthe median description ({rows[median]['package']}, {lengths[median]} tokens), "
          f"medians of {args.repeats} interleaved rounds:")
    print(f"{'decoding':<10}{'ours ms':>10}{'transformers ms':>17}{'ratio':>8}{'new tokens':>12}  {'ids':<9}"
          + (f"{'eager ms':>10}{'fused gain':>12}" if args.eager else ""))
    for name, (a, b, new, same, eager) in measure(median, args.repeats, eager=args.eager).items():
        extra = f"{eager * 1e3:>10.1f}{eager / a:>12.2f}" if eager else ""
        print(f"{name:<10}{a * 1e3:>10.1f}{b * 1e3:>17.1f}{b / a:>8.2f}{new:>12}  {same:<9}{extra}", flush=True)

    print(f"\n{len(window)} descriptions around the median ({min(lengths[i] for i in window)}-"
          f"{max(lengths[i] for i in window)} tokens), medians of {args.spread_repeats} interleaved rounds each, ms:")
    print(f"{'package':<32}{'tokens':>7}" + "".join(f"{name + ' ours':>14}{name + ' tf':>12}{'new':>5}"
                                                    for name in decodings) + "  ids")
    spread = {name: [] for name in decodings}
    for i in window:
        result = measure(i, args.spread_repeats)
        cells = "".join(f"{a * 1e3:>14.1f}{b * 1e3:>12.1f}{new:>5}" for a, b, new, *_ in result.values())
        ids_column = "identical" if all(r[3] == "identical" for r in result.values()) else "DIFFER"
        print(f"{rows[i]['package'][:31]:<32}{lengths[i]:>7}{cells}  {ids_column}", flush=True)
        for name, r in result.items():
            spread[name].append(r)
    for name, results in spread.items():
        a, b = [r[0] for r in results], [r[1] for r in results]
        print(f"{name}: ours median {statistics.median(a) * 1e3:.1f} ms (range {min(a) * 1e3:.1f}-"
              f"{max(a) * 1e3:.1f}), transformers median {statistics.median(b) * 1e3:.1f} ms; "
              f"ratio of total times {sum(b) / sum(a):.2f}")


if __name__ == "__main__":
    main()
