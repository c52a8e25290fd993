"""Generation speed in tokens/s: this engine against transformers, same weights, same inputs, same run.

    python benchmarks/generate.py           # bert2bert-base workloads + a small model (per-token overhead)
    python benchmarks/generate.py --quick   # fewer repeats

Source 128 tokens, exactly 64 new tokens (no eos, min_new_tokens = max_new_tokens = 64). Deterministic modes
(greedy, beam search) are first checked to produce identical token ids; sampling cannot match transformers'
torch RNG, so only its speed is compared. Ratio = our tokens/s over transformers' (above 1: faster).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bert2bert_pair, interleaved, machine  # noqa: E402

NEW = 64
SRC = 128


def workloads():
    """(name, model size kwargs, batch, generate kwargs)."""
    base, small, gpt2 = {}, dict(hidden=128, layers=2, heads=2, intermediate=512), {"decoder": "gpt2"}
    return [
        ("base greedy b1", base, 1, {}),
        ("base greedy b8", base, 8, {}),
        ("base beam4 b1", base, 1, {"num_beams": 4}),
        ("base sample b1", base, 1, {"do_sample": True, "top_k": 50, "top_p": 0.95}),
        ("small greedy b1", small, 1, {}),
        ("bert2gpt2 greedy b1", gpt2, 1, {}),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--only", help="run only the workloads whose name contains this text")
    args = parser.parse_args()
    import torch  # noqa: PLC0415

    import seq2seq  # noqa: PLC0415
    seq2seq.tune_cpu()  # as the command line does: OpenBLAS's idle threads sleep, malloc keeps freed memory

    repeats = 2 if args.quick else 3
    print(f"{machine()}, torch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"source {SRC} tokens, {NEW} new tokens, float32")
    print(f"{'workload':<22}{'ours tok/s':>12}{'transformers tok/s':>20}{'ratio':>8}  ids")
    pairs = {}
    for name, size, batch, extra in workloads():
        if args.only and args.only not in name:
            continue
        key = tuple(sorted(size.items()))
        if key not in pairs:
            pairs = {key: bert2bert_pair(**size)}  # one model pair in memory at a time
        hf, ours = pairs[key]
        start, pad = hf.config.decoder_start_token_id, hf.config.pad_token_id
        hf.generation_config.decoder_start_token_id, hf.generation_config.pad_token_id = start, pad
        hf.generation_config.eos_token_id = None
        rng = np.random.default_rng(0)
        ids = rng.integers(1000, 30000, (batch, SRC))
        mask = np.ones_like(ids)
        if batch > 1:
            mask[1:, SRC * 3 // 4:] = 0
        kwargs = dict(max_new_tokens=NEW, min_new_tokens=NEW, **extra)
        t_ids, t_mask = torch.tensor(ids), torch.tensor(mask)

        def run_ours():
            return ours.generate(ids, attention_mask=mask, eos_token_id=None, decoder_start_token_id=start,
                                 pad_token_id=pad, seed=0, **kwargs)

        def run_hf():
            with torch.no_grad():
                return hf.generate(input_ids=t_ids, attention_mask=t_mask, **kwargs).numpy()

        a, b = run_ours(), run_hf()
        assert a.shape == b.shape, (a.shape, b.shape)
        same = "n/a (sampling)" if extra.get("do_sample") else ("identical" if np.array_equal(a, b) else "DIFFER")
        t = interleaved({"ours": run_ours, "hf": run_hf}, repeats=repeats)
        tokens = batch * NEW
        print(f"{name:<22}{tokens / t['ours']:>12.1f}{tokens / t['hf']:>20.1f}{t['hf'] / t['ours']:>8.2f}  {same}",
              flush=True)


if __name__ == "__main__":
    main()
