"""Encoder, full forward pass and prefill at bert-base size: this engine against transformers, same weights, same
run.

    python benchmarks/forward.py            # batch 1 x 128 and batch 8 x 512 source tokens, 64 target tokens
    python benchmarks/forward.py --quick    # batch 1 x 128 only

The batched sources are padded as a real batch is: all but the first are a quarter shorter. "encoder" is the
encoder's last hidden state (every position, as transformers returns it); "full" the logits of 64 decoder tokens
(with ``encoder_last_hidden_state``, every position); "prefill" is what ``generate`` does before its second token:
encode the sources and choose the first token, ``generate(..., max_new_tokens=1)`` in both engines (the encoding
is internal there, and this engine leaves the padding's positions out of it: nn/packing.py).

Each workload first checks that the two engines' outputs agree (ids identical for prefill), then times them
interleaved and prints the median times and the ratio transformers / ours (above 1: this engine is faster).
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bert2bert_pair, interleaved, machine, max_rel_err  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only batch 1 x 128")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch  # noqa: PLC0415

    import seq2seq  # noqa: PLC0415
    seq2seq.tune_cpu()  # as the command line does: OpenBLAS's idle threads sleep, malloc keeps freed memory

    hf, ours = bert2bert_pair()
    print(f"bert2bert-base ({ours.num_parameters() / 1e6:.0f}M parameters), float32, {machine()}, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads")
    workloads = [(1, 128, 64)] if args.quick else [(1, 128, 64), (8, 512, 64)]
    rng = np.random.default_rng(0)
    print(f"{'workload':<26}{'ours ms':>10}{'transformers ms':>17}{'ratio':>8}{'max rel err':>13}")
    for batch, src, tgt in workloads:
        ids = rng.integers(1000, 30000, (batch, src))
        mask = np.ones_like(ids)
        mask[1:, src * 3 // 4:] = 0  # some padding when batched
        dec = rng.integers(1000, 30000, (batch, tgt))
        t_ids, t_mask, t_dec = torch.tensor(ids), torch.tensor(mask), torch.tensor(dec)

        def ours_encoder():
            with seq2seq.no_grad():
                return ours.encode(ids, attention_mask=mask).data

        def hf_encoder():
            with torch.no_grad():
                return hf.encoder(input_ids=t_ids, attention_mask=t_mask).last_hidden_state.numpy()

        def ours_full():
            with seq2seq.no_grad():
                return ours(ids, attention_mask=mask, decoder_input_ids=dec).logits

        def hf_full():
            with torch.no_grad():
                return hf(input_ids=t_ids, attention_mask=t_mask, decoder_input_ids=t_dec).logits.numpy()

        def ours_prefill():
            return ours.generate(ids, attention_mask=mask, max_new_tokens=1)

        def hf_prefill():
            with torch.no_grad():
                return hf.generate(input_ids=t_ids, attention_mask=t_mask, max_new_tokens=1, do_sample=False).numpy()

        for part, mine, theirs, agree in (("encoder", ours_encoder, hf_encoder, close),
                                          ("full", ours_full, hf_full, close),
                                          ("prefill", ours_prefill, hf_prefill, same_ids)):
            err = agree(mine(), theirs())
            t = interleaved({"ours": mine, "hf": theirs}, repeats=args.repeats)
            name = f"{part} b{batch} x {src} (tgt {tgt})"
            print(f"{name:<26}{t['ours'] * 1e3:>10.1f}{t['hf'] * 1e3:>17.1f}{t['hf'] / t['ours']:>8.2f}"
                  f"{err:>13.1e}", flush=True)


def close(got, want):
    """The largest relative difference of two float outputs, checked below 1e-4."""
    err = max_rel_err(got, want)
    assert err < 1e-4, f"outputs disagree: {err}"
    return err


def same_ids(got, want):
    """0.0 for token ids equal in both engines (checked)."""
    assert np.array_equal(got, want), f"first tokens differ: {got} against {want}"
    return 0.0


if __name__ == "__main__":
    main()
