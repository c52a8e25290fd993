"""The command line (``python -m seq2seq``)."""
