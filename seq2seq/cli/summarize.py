"""``summarize``: the README's main job. A Debian package description -> its one-line synopsis, with the model
this project ships (weights/minilm-l6-debian-synopsis, fine-tuned with this engine), offline.

The model writes lower case with WordPiece's spacing (``lv2 plugins for c + + ( development files )``); when the
model folder has a truecasing table (truecase.json, see models/truecase.py), each synopsis is printed with the
capitals and spacing of its description and of Debian's synopses (``LV2 plugins for C++ (development files)``).
``--no-truecase`` prints the decoded text as it is."""
import sys
import time

from ..core.autograd import no_grad
from ..core.backend import BACKENDS
from ..core.errors import Seq2SeqError
from ..models.model import EncoderDecoderModel
from ..models.tokenizer import Tokenizer
from ..models.truecase import Truecaser
from ..training.console import progress_bar
from .examples import PENLIGHT_DESCRIPTION, SHIPPED_MODEL, shipped_model_dir
from .inference import add_generation_flags, generation_kwargs


def cmd_summarize(args):
    start = time.perf_counter()
    path = args.model or shipped_model_dir()  # a str stays a str: it may be a Hub id
    if not args.model and not (path / "config.json").is_file():
        sys.exit(f"error: the shipped model {path} is not there (it comes with the git checkout, not with a "
                 "package install): pass --model DIR, or make it with `bash weights/make_default_model.sh`")
    given = [line.strip() for line in sys.stdin if line.strip()] if args.text == ["-"] else args.text
    texts = given or [PENLIGHT_DESCRIPTION]
    try:
        model = EncoderDecoderModel.from_pretrained(path, backend=args.backend)
        tokenizer = Tokenizer.from_pretrained(path)
        truecase = None if args.no_truecase else Truecaser.from_pretrained(path)  # None: the folder has no table
    except Seq2SeqError as err:
        sys.exit(f"error: {err}")
    synopses, limit = [], args.max_source_len or tokenizer.model_max_length or 128  # the length it was scored at
    with progress_bar(total=len(texts), desc="summarizing", unit="text") as bar:  # printed at the end: no clash
        for first in range(0, len(texts), 32):
            batch = tokenizer(texts[first:first + 32], max_length=limit)
            with no_grad():  # beams and lengths: the model's generation_config.json unless given here
                ids = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"],
                                     **generation_kwargs(args))
            decoded = tokenizer.batch_decode(ids, skip_special_tokens=True)
            if truecase:  # the capitals and spacing of each description and of the training synopses
                decoded = [truecase(text, source) for text, source in zip(decoded, texts[first:first + 32])]
            synopses += decoded
            bar.update(len(batch["input_ids"]))
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


def add_command(commands):
    summ = commands.add_parser("summarize", help="one-line synopsis of Debian package descriptions (the shipped model)")
    summ.add_argument("text", nargs="*", help="descriptions ('-': one per line from stdin; none: an example)")
    summ.add_argument("--model", help=f"model directory or Hub id (default: weights/{SHIPPED_MODEL} of this checkout)")
    summ.add_argument("--max-source-len", type=int,
                      help="source tokens kept (default: the tokenizer's model_max_length, else 128)")
    summ.add_argument("--backend", choices=BACKENDS, default="numpy")
    summ.add_argument("--no-truecase", action="store_true",
                      help="print the model's lower-case output as decoded, without the folder's truecase.json")
    add_generation_flags(summ)
    summ.set_defaults(run=cmd_summarize)
