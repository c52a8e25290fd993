"""Generation speed in tokens/s: this engine against transformers, same weights, same inputs, same run.

    python benchmarks/generate.py           # bert2bert-base workloads + a small model (per-token overhead)
    python benchmarks/generate.py --quick   # fewer repeats
    python benchmarks/generate.py --ctranslate2   # also CTranslate2 on a bert2bert-shaped BART (`pip install .[bench]`)
    python benchmarks/generate.py --eager   # also our eager step (cuda_graph=False) against our fused CPU step

Source 128 tokens, exactly 64 new tokens (no eos, min_new_tokens = max_new_tokens = 64). Deterministic modes
(greedy, beam search) are first checked to produce identical token ids; sampling cannot match transformers'
torch RNG, so only its speed is compared. Ratio = our tokens/s over transformers' (above 1: faster).

With ``--ctranslate2`` the bert2bert-base workloads also run CTranslate2 and transformers on a BART of the same
shape (benchmarks/ctranslate2_ref.py), timed in the same interleaved rounds as ours; "ct2 ratio" is CTranslate2's
tokens/s over transformers' on that BART, and "ours/ct2" our ratio over CTranslate2's (above 1: further ahead of
transformers than CTranslate2 is).

With ``--eager`` our engine also decodes through the model's eager step (``generate(cuda_graph=False)``: the
autograd's ops under no_grad) in the same rounds; "fused gain" is the eager path's time over the default path's
(fast/cpu/decode_step.py), whose ids must be the eager path's.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bert2bert_pair, interleaved, machine  # noqa: E402
from ctranslate2_ref import bart_reference  # noqa: E402

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


def same_ids(a, b, extra):
    """The ids column: sampling cannot match another engine's RNG, deterministic modes must match exactly."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return "n/a (sampling)" if extra.get("do_sample") else ("identical" if np.array_equal(a, b) else "DIFFER")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--repeats", type=int, help="interleaved rounds of every engine (default 3; --quick 2)")
    parser.add_argument("--only", help="run only the workloads whose name contains this text")
    parser.add_argument("--ctranslate2", action="store_true",
                        help="also time CTranslate2 against transformers on a bert2bert-shaped BART")
    parser.add_argument("--eager", action="store_true",
                        help="also time our eager decode step (cuda_graph=False) against the default fused one")
    args = parser.parse_args()
    if args.ctranslate2:
        try:
            import ctranslate2  # noqa: PLC0415
        except ImportError:
            parser.error("--ctranslate2 needs the ctranslate2 package: pip install ctranslate2 (or .[bench])")
    import torch  # noqa: PLC0415

    import seq2seq  # noqa: PLC0415
    seq2seq.tune_cpu()  # as the command line does: OpenBLAS's idle threads sleep, malloc keeps freed memory

    repeats = args.repeats or (2 if args.quick else 3)
    print(f"{machine()}, torch {torch.__version__} with {torch.get_num_threads()} threads")
    print(f"source {SRC} tokens, {NEW} new tokens, float32")
    reference = None
    if args.ctranslate2:
        reference = bart_reference(threads=torch.get_num_threads())
        print(f"CTranslate2 {ctranslate2.__version__} on the CPU, {reference.threads} threads, float32: a random "
              "BART of bert2bert-base's shape, against transformers on the same BART")
    header = f"{'workload':<22}{'ours tok/s':>12}{'transformers tok/s':>20}{'ratio':>8}  ids"
    if reference is not None:
        header = f"{header:<79}{'ct2 tok/s':>10}{'BART tf tok/s':>15}{'ct2 ratio':>10}{'ours/ct2':>10}  ct2 ids"
    if args.eager:
        header = f"{header}{'eager tok/s':>14}{'fused gain':>12}"
    print(header)
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

        def run_ours(**path):
            return ours.generate(ids, attention_mask=mask, eos_token_id=None, decoder_start_token_id=start,
                                 pad_token_id=pad, seed=0, **path, **kwargs)

        def run_eager():
            return run_ours(cuda_graph=False)

        def run_hf():
            with torch.no_grad():
                return hf.generate(input_ids=t_ids, attention_mask=t_mask, **kwargs).numpy()

        def run_ct2():
            return reference.run_ct2(ids, mask, extra, new=NEW)

        def run_bart():
            return reference.run_hf(ids, mask, extra, new=NEW)

        fns = {"ours": run_ours, "hf": run_hf}
        same = same_ids(run_ours(), run_hf(), extra)
        with_ct2 = reference is not None and not size  # the BART has bert2bert-base's shape only
        if with_ct2:
            fns.update(ct2=run_ct2, bart=run_bart)
            ct2_same = same_ids(run_ct2(), run_bart(), extra)
        if args.eager:
            fns.update(eager=run_eager)
            assert np.array_equal(run_eager(), run_ours()), "the fused step's ids differ from the eager step's"
        t = interleaved(fns, repeats=repeats)  # all engines in the same rounds: the machine's drift hits each alike
        tokens = batch * NEW
        ratio = t["hf"] / t["ours"]
        line = f"{name:<22}{tokens / t['ours']:>12.1f}{tokens / t['hf']:>20.1f}{ratio:>8.2f}  {same}"
        if with_ct2:
            ct2_ratio = t["bart"] / t["ct2"]
            line = (f"{line:<79}{tokens / t['ct2']:>10.1f}{tokens / t['bart']:>15.1f}{ct2_ratio:>10.2f}"
                    f"{ratio / ct2_ratio:>10.2f}  {ct2_same}")
        if args.eager:
            line = f"{line}{tokens / t['eager']:>14.1f}{t['eager'] / t['ours']:>12.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
