"""The texts the commands show when given none, and where the shipped model lives."""
from pathlib import Path

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

SHIPPED_MODEL = "minilm-l6-debian-synopsis"
PENLIGHT_DESCRIPTION = (  # lua-penlight, from the unseen-family test split: the model never saw this package family
    "Penlight is a set of pure Lua libraries focusing on input data handling (such as reading configuration "
    "files), functional programming (such as map, reduce, placeholder expressions,etc), and OS path management. "
    "Much of the functionality is inspired by the Python standard libraries."
)


def shipped_model_dir():
    """weights/minilm-l6-debian-synopsis beside the package: present in a git checkout (and `pip install -e .`)."""
    return Path(__file__).resolve().parents[2] / "weights" / SHIPPED_MODEL
