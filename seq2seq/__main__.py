"""``python -m seq2seq``: the command line (``cli/main.py``)."""
from .cli.main import main

main()
