"""plot.py: the PNG is valid (read back by a minimal decoder here) and shows each series in its colour."""
import math
import struct
import zlib

import numpy as np
import pytest

from seq2seq.training.plot import PALETTE, line_plot, nice_ticks, png_bytes, render


def read_png(data):
    """A minimal PNG reader for what plot.py writes: 8-bit RGB, no interlace, every row filter type 0."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "bad signature"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body), f"bad CRC in {kind}"
        chunks.append((kind, body))
        pos += 12 + length
    assert pos == len(data)
    kinds = [k for k, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(raw) == height * (1 + 3 * width)
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(height, 1 + 3 * width)
    assert (rows[:, 0] == 0).all(), "only filter type 0 is expected"
    return rows[:, 1:].reshape(height, width, 3)


def has_colour(image, colour):
    return bool((image == np.array(colour, dtype=np.uint8)).all(axis=-1).any())


def test_line_plot_writes_a_valid_png_with_every_series(tmp_path):
    steps = np.arange(1, 201)
    series = {"train": (steps, 3 * np.exp(-steps / 50) + 1), "smoothed": (steps, 2.5 * np.exp(-steps / 60) + 1.2),
              "validation": ([50, 100, 150, 200], [2.4, 1.9, 1.6, 1.5])}
    path = tmp_path / "loss.png"
    line_plot(path, series, width=640, height=400, title="loss per step")
    image = read_png(path.read_bytes())
    assert image.shape == (400, 640, 3)
    for colour in PALETTE[:3]:
        assert has_colour(image, colour)
    assert not has_colour(image, PALETTE[3])
    assert (image == 255).all(axis=-1).mean() > 0.5  # mostly white background
    assert (image == 0).all(axis=-1).any()  # black axes and text


def test_series_are_drawn_where_their_values_are():
    image = render({"low": ([0, 10], [0, 0]), "high": ([0, 10], [10, 10])}, width=400, height=300)
    column = image[:, 150]  # left of the legend (top right)
    rows_low = np.nonzero((column == PALETTE[0]).all(axis=-1))[0]
    rows_high = np.nonzero((column == PALETTE[1]).all(axis=-1))[0]
    assert len(rows_low) and len(rows_high)
    assert rows_high.max() < rows_low.min()  # higher values are higher on the picture (smaller row numbers)


def test_gaps_single_points_and_empty_series_do_not_fail(tmp_path):
    path = tmp_path / "odd.png"
    line_plot(path, {"gappy": ([1, 2, 3, 4], [1.0, math.nan, 2.0, 3.0]), "one": ([2], [1.5]), "none": ([], [])},
              width=300, height=200)
    image = read_png(path.read_bytes())
    assert image.shape == (200, 300, 3) and has_colour(image, PALETTE[0]) and has_colour(image, PALETTE[1])
    read_png(png_bytes(render({"flat": ([0, 1], [5.0, 5.0])}, width=200, height=120)))


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="2 x values but 3"):
        line_plot(tmp_path / "x.png", {"s": ([1, 2], [1, 2, 3])})
    with pytest.raises(ValueError, match="at least"):
        line_plot(tmp_path / "x.png", {}, width=10, height=10)


@pytest.mark.parametrize("low, high", [(0, 2812), (1.234, 10.87), (-3, 3), (0.0012, 0.0031), (7, 7)])
def test_nice_ticks_cover_the_range_with_round_steps(low, high):
    ticks, step = nice_ticks(low, high)
    assert ticks[0] <= low and ticks[-1] >= high and 3 <= len(ticks) <= 12
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, m) for m in (1, 2, 5))
