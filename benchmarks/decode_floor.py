"""The matrix products of one decode step, alone: the floor under a decode step's time, ours and torch's.

    python benchmarks/decode_floor.py              # bert2bert-base's decoder: products at 1, 4 and 8 rows
    python benchmarks/decode_floor.py --steps      # also both engines' whole decode step, to set beside them

A decode step of bert2bert-base multiplies its rows (1 for greedy batch 1, 4 for beam 4 or batch 4, 8 for greedy
batch 8) by every weight of the decoder and by the LM head: 0.49 GB of float32, read once a step. This times those
products and nothing else, on distinct weights for each layer (so that they stream from memory as in a real step,
not from the cache), as each engine runs them:

- ours: ``fast.cpu.thin.thin_products`` as the decoder calls it (query, key and value of a layer together; column
  chunks on every core), the weights laid out ``[in, out]`` as the model stores them;
- torch: ``torch.nn.functional.linear`` on the same weights in ``nn.Linear``'s ``[out, in]``, torch's threads.

The cross-attention keys and values are computed once per source, not per step, so they are left out. With
``--steps`` both engines' ``generate`` also run (source 128; 17 and 1 new tokens, the difference over 16 steps is
a step's time, encoder and first step excluded), so "step - products" is what is spent outside the products.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bert2bert_pair, interleaved, machine  # noqa: E402

HIDDEN, INTER, LAYERS, VOCAB = 768, 3072, 12, 30522
ROWS = (1, 4, 8)


def decoder_weights(rng):
    """Per layer the weight groups one step multiplies, ``[in, out]`` each: [q, k, v], [o], [cross q], [cross o],
    [ffn in], [ffn out]; then the LM head's transform and its vocabulary product."""
    def w(n_in, n_out):
        return rng.standard_normal((n_in, n_out), dtype=np.float32)

    groups = []
    for _ in range(LAYERS):
        groups += [[w(HIDDEN, HIDDEN) for _ in range(3)], [w(HIDDEN, HIDDEN)], [w(HIDDEN, HIDDEN)],
                   [w(HIDDEN, HIDDEN)], [w(HIDDEN, INTER)], [w(INTER, HIDDEN)]]
    return groups + [[w(HIDDEN, HIDDEN)], [w(HIDDEN, VOCAB)]]


def ours_step(groups, x_by_width):
    from seq2seq.fast.cpu.thin import thin_products  # noqa: PLC0415
    for group in groups:
        thin_products(x_by_width[group[0].shape[0]], [(w, None) for w in group])


def torch_step(torch, groups, x_by_width):
    with torch.no_grad():
        for group in groups:
            for w in group:
                torch.nn.functional.linear(x_by_width[w.shape[1]], w)  # w: [out, in], as nn.Linear holds it


def step_times(rows, repeats):
    """(ours ms, transformers ms) per decode step of bert2bert-base at ``rows`` (greedy batch, or beam 4)."""
    import torch  # noqa: PLC0415
    hf, ours = bert2bert_pair()
    start, pad = hf.config.decoder_start_token_id, hf.config.pad_token_id
    hf.generation_config.decoder_start_token_id, hf.generation_config.pad_token_id = start, pad
    hf.generation_config.eos_token_id = None
    ids = np.random.default_rng(0).integers(1000, 30000, (1 if rows == "beam 4" else rows, 128))
    extra = {"num_beams": 4} if rows == "beam 4" else {}
    t_ids = torch.tensor(ids)

    def run(engine, new):
        kwargs = dict(max_new_tokens=new, min_new_tokens=new, **extra)
        if engine == "ours":
            return lambda: ours.generate(ids, eos_token_id=None, decoder_start_token_id=start, pad_token_id=pad,
                                         **kwargs)
        return lambda: hf.generate(input_ids=t_ids, **kwargs)

    with torch.no_grad():
        t = interleaved({(e, n): run(e, n) for e in ("ours", "hf") for n in (1, 17)}, repeats=repeats)
    return tuple((t[(e, 17)] - t[(e, 1)]) / 16 * 1e3 for e in ("ours", "hf"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", action="store_true", help="also time both engines' whole decode step")
    args = parser.parse_args()
    import torch  # noqa: PLC0415

    import seq2seq  # noqa: PLC0415
    from seq2seq.fast.cpu.parallel import num_threads  # noqa: PLC0415
    seq2seq.tune_cpu()
    rng = np.random.default_rng(0)
    groups = decoder_weights(rng)
    gigabytes = sum(w.nbytes for group in groups for w in group) / 1e9
    torch_groups = [[torch.from_numpy(np.ascontiguousarray(w.T)) for w in group] for group in groups]
    print(f"{machine()}, torch {torch.__version__} with {torch.get_num_threads()} threads, ours "
          f"{num_threads()} threads")
    print(f"bert2bert-base decoder step: {sum(len(g) for g in groups)} products over {gigabytes:.2f} GB of weights")
    print(f"{'rows':>5}{'ours ms':>10}{'torch ms':>10}{'ours GB/s':>11}{'ours / 1 row':>14}{'torch / 1 row':>15}")
    base = {}
    for rows in ROWS:
        xs = {n: rng.standard_normal((rows, n), dtype=np.float32) for n in (HIDDEN, INTER)}
        t_xs = {n: torch.from_numpy(x) for n, x in xs.items()}
        t = interleaved({"ours": lambda: ours_step(groups, xs), "torch": lambda: torch_step(torch, torch_groups, t_xs)},
                        repeats=args.repeats)
        ms = {k: v * 1e3 for k, v in t.items()}
        base.setdefault("ours", ms["ours"])
        base.setdefault("torch", ms["torch"])
        print(f"{rows:>5}{ms['ours']:>10.1f}{ms['torch']:>10.1f}{gigabytes / t['ours']:>11.1f}"
              f"{ms['ours'] / base['ours']:>14.2f}{ms['torch'] / base['torch']:>15.2f}", flush=True)
    if args.steps:
        del groups, torch_groups
        print("\nwhole decode steps (generate: 17 new tokens less 1, over 16), ms:")
        print(f"{'workload':<14}{'ours':>8}{'transformers':>14}{'ratio':>8}")
        for rows in (1, "beam 4", 8):
            a, b = step_times(rows, max(3, args.repeats // 2))
            name = rows if rows == "beam 4" else f"greedy b{rows}"
            print(f"{name:<14}{a:>8.1f}{b:>14.1f}{b / a:>8.2f}", flush=True)


if __name__ == "__main__":
    main()
