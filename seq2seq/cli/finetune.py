"""``trim-vocab`` and ``finetune``: the training half of the command line.

``finetune``'s defaults are not the library's. ``TrainingArguments`` (training/train.py) defaults as transformers'
``Seq2SeqTrainingArguments`` does (lr 5e-5, batch 8, 3 epochs, no warm-up, no weight decay, seed 42); this command
starts from ``RECIPE`` instead: the settings that worked for a MiniLM bert2bert on Debian package descriptions (the
notes' single-run recipe, see ../shared/NOTES-transformers.md), so that ``finetune --train pairs.jsonl`` with
nothing else trains the model this project is about. ``--help`` shows each default.

Under ``mpirun -n N python -m seq2seq finetune ...`` it trains data-parallel over the N ranks (training/train.py):
``--batch-size`` stays the global batch, every rank reads the same files (a shared file system, as MPI jobs have),
and rank 0 alone prints and writes.
"""
import os
import signal
import sys

from ..core.backend import BACKENDS
from ..core.distributed import get_communicator, use_own_gpu
from ..core.errors import CheckpointNotFoundError, Seq2SeqError
from ..models.model import EncoderDecoderModel
from ..models.tokenizer import Tokenizer
from ..training.data import Seq2SeqDataset
from ..training.train import Trainer, TrainingArguments, find_checkpoint, list_checkpoints
from ..training.trim import count_vocab_parameters, read_corpus, trim_vocabulary
from .warm_start import set_special_ids, warm_start

# The command's defaults where they differ from TrainingArguments': the MiniLM bert2bert recipe (weight decay
# 0.01 and warm-up 282 = 4% of the 6 epochs of 128-pair batches over the Debian training split), checkpoints every
# 200 steps, the newest 3 kept.
RECIPE = {"lr": 1.5e-4, "batch_size": 128, "epochs": 6, "warmup_steps": 282, "weight_decay": 0.01,
          "save_every": 200, "keep_checkpoints": 3, "seed": 0}
# TrainingArguments fields as flags, with their help
TRAINING_FLAGS = (
    ("lr", float, "peak learning rate"), ("batch_size", int, "pairs per forward pass"),
    ("grad_accum", int, "forward passes per optimizer step"), ("epochs", float, "passes over --train"),
    ("max_steps", int, "optimizer steps (overrides --epochs)"),
    ("warmup_steps", int, "steps of linear warm-up, then linear decay to 0"),
    ("weight_decay", float, "AdamW weight decay of the matrices"),
    ("clip", float, "max gradient norm (0: off)"),
    ("label_smoothing_factor", float, "weight of the uniform target mixed into each label (0: off)"),
    ("eval_every", int, "evaluate every N steps (0: only at the end)"),
    ("eval_examples", int, "validation pairs scored with ROUGE"), ("eval_beams", int, "beams when evaluating"),
    ("save_every", int, "checkpoint every N steps (and at the end)"),
    ("keep_checkpoints", int, "newest checkpoints kept (0: all)"),
    ("seed", int, "seed of the data order, dropout and fresh weights"),
    ("log_every", int, "progress line every N steps when stderr is not a terminal"),
    ("stop_after", int, "stop after N steps of this run (the schedule still spans the whole run)"))


def cmd_trim_vocab(args):
    try:
        texts = read_corpus(args.corpus, fields=[f.strip() for f in args.fields.split(",") if f.strip()])
        model = EncoderDecoderModel.from_pretrained(args.model)
        tokenizer = Tokenizer.from_pretrained(args.tokenizer or args.model)
        trimmed, new_tokenizer, kept = trim_vocabulary(model, tokenizer, texts, min_count=args.min_count)
    except Seq2SeqError as err:
        sys.exit(f"error: {err}")
    tied = bool(trimmed.config.tie_encoder_decoder)
    trimmed.save_pretrained(args.out, include_tied_copies=tied)
    new_tokenizer.save_pretrained(args.out)
    print(f"corpus: {len(texts)} texts from {args.corpus}")
    print(f"vocabulary: {tokenizer.vocab_size} -> {len(kept)} ids (min count {args.min_count}, special tokens kept)")
    print(f"parameters: {model.num_parameters() / 1e6:.2f}M -> {trimmed.num_parameters() / 1e6:.2f}M "
          f"(vocabulary-sized: {count_vocab_parameters(model) / 1e6:.2f}M -> "
          f"{count_vocab_parameters(trimmed) / 1e6:.2f}M)")
    print(f"wrote model and tokenizer to {args.out}")
    if tied:
        print("note: encoder and decoder are tied; the decoder's copies of the shared tensors were written too, "
              "so transformers 5 (which ignores tie_encoder_decoder) loads the same model")


def finetune_model(args, checkpoint):
    """The model to train and its tokenizer: from the checkpoint being resumed, from --model, or warm-started
    from --encoder/--decoder with the special ids a BERT vocabulary needs ([CLS] starts, [SEP] ends, [PAD] pads)."""
    if not (checkpoint or args.model):
        model, tokenizer, _ = warm_start(args.encoder, args.decoder, backend=args.backend, seed=args.seed,
                                         tie_encoder_decoder=args.tie_encoder_decoder)
        return model, tokenizer
    path = checkpoint or args.model
    model = EncoderDecoderModel.from_pretrained(path, backend=args.backend)
    tokenizer = Tokenizer.from_pretrained(args.tokenizer or path)
    set_special_ids(model, tokenizer, overwrite=False)  # fill only what the checkpoint leaves unset
    return model, tokenizer


def find_resumed_checkpoint(args):
    """The checkpoint --resume names (None: start afresh); exits when --out holds checkpoints and no --resume."""
    if args.resume is None:
        if existing := list_checkpoints(args.out):
            sys.exit(f"error: {args.out} already holds checkpoints (latest {existing[-1]}); "
                     "pass --resume to continue from it, or choose another --out")
        return None
    try:
        return find_checkpoint(args.out if args.resume is True else args.resume)
    except CheckpointNotFoundError:
        if args.resume is not True:
            raise
        print(f"no checkpoint in {args.out} yet: starting afresh", file=sys.stderr)
        return None


def cmd_finetune(args):
    if args.model and (args.encoder or args.decoder or args.tie_encoder_decoder):
        sys.exit("error: give either --model or --encoder/--decoder/--tie-encoder-decoder, not both")
    try:
        comm = get_communicator()
        use_own_gpu(comm, args.backend)
        checkpoint = find_resumed_checkpoint(args)
        model, tokenizer = finetune_model(args, checkpoint)
        lengths = {"max_source_len": args.max_source_len, "max_target_len": args.max_target_len}
        fields = {"source_field": args.source_field, "target_field": args.target_field}
        train_data = Seq2SeqDataset.from_jsonl(args.train, tokenizer, **fields, **lengths)
        validation = Seq2SeqDataset.from_jsonl(args.validation, tokenizer, **fields, **lengths) \
            if args.validation else None
        settings = TrainingArguments(**{name: getattr(args, name) for name, _, _ in TRAINING_FLAGS},
                                     eval_max_new_tokens=args.max_target_len)
        os.makedirs(args.out, exist_ok=True)
        trainer = Trainer(model, tokenizer, train_data, args=settings, out_dir=args.out, validation_data=validation,
                          comm=comm)
        if checkpoint:
            trainer.load_checkpoint(checkpoint)
    except Seq2SeqError as err:
        sys.exit(f"error: {err}")
    ranks = ""
    if comm.world_size > 1:  # "2 ranks of 3 pairs" (of a 6-pair batch); "3 ranks of 2+ pairs" (of 7)
        share, left = divmod(settings.batch_size, comm.world_size)
        ranks = f"; {comm.world_size} ranks of {share}{'+' if left else ''} pairs"
    print(f"model: {model.num_parameters() / 1e6:.1f}M parameters; {len(train_data)} training pairs, "
          f"{trainer.batches.batches_per_epoch} batches an epoch; steps {trainer.step} -> {trainer.total_steps}"
          + ranks + (f" (resuming {checkpoint})" if checkpoint else ""), file=trainer.stream)
    try:
        trainer.train()
    except KeyboardInterrupt:
        saved = list_checkpoints(args.out)
        sys.exit(f"\ninterrupted at step {trainer.step}; continue with --resume"
                 + (f" (latest checkpoint: {saved[-1]})" if saved else " (no checkpoint written yet)"))
    report_end(trainer, args.out)


def report_end(trainer, out):
    """Say where the results are, or where the run stopped (exiting as a signal would, if one stopped it)."""
    if trainer.step >= trainer.total_steps:
        print(f"done: {os.path.join(out, 'final')} (model + tokenizer), history.json, loss.png in {out}",
              file=trainer.stream)
        return
    by = f" by {signal.Signals(trainer.stopped_by).name}" if trainer.stopped_by else ""
    saved = list_checkpoints(out)
    print(f"stopped{by} at step {trainer.step} of {trainer.total_steps}"
          + (f" (checkpoint {saved[-1]})" if saved else "") + "; continue with --resume", file=trainer.stream)
    if trainer.stopped_by:  # the shell's convention for an end by signal, so that scripts stop here too
        sys.exit(128 + trainer.stopped_by)


def add_trim_command(commands):
    trim = commands.add_parser("trim-vocab", help="cut a model and its WordPiece tokenizer to a corpus' token ids",
                               description="Cut a saved model whose encoder and decoder share one WordPiece "
                                           "vocabulary (a bert2bert, say) and its tokenizer down to the token ids "
                                           "a corpus uses (see training/trim.py).")
    trim.add_argument("--model", required=True,
                      help="directory or Hub id of a saved encoder-decoder model (with its tokenizer)")
    trim.add_argument("--tokenizer", help="tokenizer directory or Hub id (default: --model)")
    trim.add_argument("--corpus", required=True, help="JSONL file (texts in --fields), or a text file, one per line")
    trim.add_argument("--fields", default="source,target", help="JSONL fields holding texts (default: source,target)")
    trim.add_argument("--min-count", type=int, default=1, help="keep ids seen at least this often (default: 1)")
    trim.add_argument("--out", required=True, help="directory to write the trimmed model and tokenizer to")
    trim.set_defaults(run=cmd_trim_vocab)


def add_finetune_command(commands):
    library = TrainingArguments()
    changed = ", ".join(f"--{name.replace('_', '-')} {value} (library: {getattr(library, name)})"
                        for name, value in RECIPE.items())
    tune = commands.add_parser(
        "finetune", help="fine-tune an encoder-decoder model on JSONL source/target pairs",
        description="Fine-tune on JSONL pairs, with evaluation, checkpoints and --resume. The defaults are the "
                    "recipe that worked for a MiniLM bert2bert on Debian package descriptions, not the library's "
                    f"TrainingArguments (transformers' Seq2SeqTrainingArguments defaults): {changed}.")
    tune.add_argument("--train", required=True, help="JSONL file of training pairs")
    tune.add_argument("--validation", help="JSONL file of validation pairs (loss and ROUGE at each evaluation)")
    tune.add_argument("--source-field", default="source", help="JSONL field of the source text (default: source)")
    tune.add_argument("--target-field", default="target", help="JSONL field of the target text (default: target)")
    tune.add_argument("--model", help="start from this saved encoder-decoder model (directory or Hub id, with its "
                                      "tokenizer)")
    tune.add_argument("--tokenizer", help="tokenizer directory or Hub id (default: the model's or the decoder's)")
    tune.add_argument("--encoder", help="warm-start the encoder from this checkpoint directory or Hub id "
                                        "(default: all-MiniLM-L6-v2)")
    tune.add_argument("--decoder", help="warm-start the decoder from this checkpoint directory or Hub id "
                                        "(default: --encoder)")
    tune.add_argument("--tie-encoder-decoder", action="store_true", help="encoder and decoder share their weights")
    tune.add_argument("--out", required=True, help="directory for checkpoints, final/, history.json, loss.png")
    tune.add_argument("--resume", nargs="?", const=True, metavar="DIR",
                      help="continue from a checkpoint directory, or (no DIR) from the latest one in --out")
    for name, kind, help_text in TRAINING_FLAGS:
        default = RECIPE.get(name, getattr(library, name))
        tune.add_argument("--" + name.replace("_", "-"), type=kind, default=default,
                          help=f"{help_text} (default: {default})")
    tune.add_argument("--max-source-len", type=int, default=128, help="source tokens kept (default: 128)")
    tune.add_argument("--max-target-len", type=int, default=32, help="label tokens kept (default: 32)")
    tune.add_argument("--backend", choices=BACKENDS, default="numpy")
    tune.set_defaults(run=cmd_finetune)
