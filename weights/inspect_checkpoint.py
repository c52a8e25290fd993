"""List what a checkpoint holds and what this engine makes of it: a learning tool.

    python weights/inspect_checkpoint.py DIR                 # an encoder-decoder checkpoint (config.json + safetensors)
    python weights/inspect_checkpoint.py ENC_DIR DEC_DIR     # two checkpoints to warm-start from

Prints every tensor (name, shape, dtype), then the parameters the model builds with the checkpoint key each one
came from, the keys that were missing (freshly initialised) and the ones no layer used.
"""
import argparse
import warnings

import numpy as np

from seq2seq import EncoderDecoderModel
from seq2seq.models.checkpoint import load_state_dict


def describe(path):
    tensors = load_state_dict(path, dtype="float32")
    total = sum(int(np.prod(a.shape)) for a in tensors.values())
    print(f"{path}: {len(tensors)} tensors, {total / 1e6:.1f}M values")
    for key in sorted(tensors):
        print(f"  {key:<80} {str(tuple(tensors[key].shape)):<16} {tensors[key].dtype}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="one encoder-decoder checkpoint, or an encoder and a decoder")
    args = parser.parse_args()
    if len(args.paths) > 2:
        parser.error("give one encoder-decoder checkpoint, or an encoder and a decoder checkpoint")
    for path in args.paths:
        describe(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported below instead
        if len(args.paths) == 1:
            model = EncoderDecoderModel.from_pretrained(args.paths[0])
        else:
            model = EncoderDecoderModel.from_encoder_decoder_pretrained(*args.paths)
    print(f"\n{model}")
    for name, p in model.named_parameters():
        print(f"  {name:<80} {p.shape}")
    for alias, owner in model.store.aliases.items():
        print(f"  {alias:<80} shared with {owner}")
    print(f"\nmissing (freshly initialised): {model.loading_info['missing_keys'] or 'none'}")
    print(f"unused: {model.loading_info['unexpected_keys'] or 'none'}")


if __name__ == "__main__":
    main()
