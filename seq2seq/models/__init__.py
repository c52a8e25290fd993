"""The models: configs, checkpoints, the tokenizer, the BERT encoder, the three decoders, ``EncoderDecoderModel``."""
