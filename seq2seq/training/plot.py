"""A tiny line-plot writer: numbers in, a PNG file out, with only NumPy, zlib and struct.

    line_plot("loss.png", {"train": (steps, losses), "validation": (eval_steps, eval_losses)}, title="loss")

Why not matplotlib: the package installs with NumPy alone, and a training run should still leave a picture of
its loss curve behind. The picture is drawn into an ``[H, W, 3]`` uint8 array (axes, tick marks with numbers,
one colour per series, a legend) and written as the simplest valid PNG: an 8-bit RGB ``IHDR`` chunk, one
zlib-compressed ``IDAT`` chunk whose rows each start with filter byte 0 ("None"), and ``IEND``; every chunk is
``length, type, data, CRC-32(type + data)`` (PNG specification, sections 5 and 11). Text uses a built-in 5x7
bitmap font (digits, letters drawn as capitals, a little punctuation).
"""
import math
import struct
import zlib

import numpy as np

# Colours of successive series: the "tab10" palette (blue, orange, green, red, purple, ...).
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
WHITE, BLACK, GRID = (255, 255, 255), (0, 0, 0), (225, 225, 225)
MARKER_LIMIT = 25  # series with at most this many points (evaluations) also get a square at each point

# 5x7 glyphs: seven rows, each a 5-bit number whose highest bit is the leftmost pixel (hex, two digits a row).
FONT = {
    "0": "0E11131519110E", "1": "040C040404040E", "2": "0E11010204081F", "3": "1F02040201110E",
    "4": "02060A121F0202", "5": "1F101E0101110E", "6": "0608101E11110E", "7": "1F010204080808",
    "8": "0E11110E11110E", "9": "0E11110F01020C", "A": "0E11111F111111", "B": "1E11111E11111E",
    "C": "0E11101010110E", "D": "1C12111111121C", "E": "1F10101E10101F", "F": "1F10101E101010",
    "G": "0E11101711110F", "H": "1111111F111111", "I": "0E04040404040E", "J": "0702020202120C",
    "K": "11121418141211", "L": "1010101010101F", "M": "111B1515111111", "N": "11111915131111",
    "O": "0E11111111110E", "P": "1E11111E101010", "Q": "0E11111115120D", "R": "1E11111E141211",
    "S": "0F10100E01011E", "T": "1F040404040404", "U": "1111111111110E", "V": "11111111110A04",
    "W": "1111111515150A", "X": "11110A040A1111", "Y": "1111110A040404", "Z": "1F01020408101F",
    ".": "00000000000C0C", "-": "0000000E000000", "+": "0004041F040400", ":": "000C0C000C0C00",
    "/": "00010204081000", "(": "02040808080402", ")": "08040202020408", "_": "0000000000001F",
    "%": "18190204081303", ",": "000000000C0408", "=": "00001F001F0000", " ": "00000000000000",
}
GLYPH_W, GLYPH_H, ADVANCE = 5, 7, 6


def _glyph(char):
    """The 7x5 boolean bitmap of ``char`` (lower case drawn as capitals; unknown characters as blanks)."""
    code = FONT.get(char.upper(), FONT[" "])
    rows = [int(code[i:i + 2], 16) for i in range(0, 14, 2)]
    return np.array([[(row >> (4 - col)) & 1 for col in range(GLYPH_W)] for row in rows], dtype=bool)


def text_width(text, scale=1):
    return max(len(text) * ADVANCE - 1, 0) * scale


def draw_text(image, text, x, y, color=BLACK, *, scale=1):
    """Draw ``text`` with its top-left corner at pixel ``(x, y)``, clipped to the image."""
    h, w = image.shape[:2]
    for i, char in enumerate(text):
        bitmap = np.kron(_glyph(char), np.ones((scale, scale), dtype=bool))
        ys, xs = np.nonzero(bitmap)
        xs, ys = xs + x + i * ADVANCE * scale, ys + y
        keep = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
        image[ys[keep], xs[keep]] = color


def fill_rect(image, x0, y0, x1, y1, color):
    """Fill the pixels ``x0 <= x < x1``, ``y0 <= y < y1`` (clipped)."""
    h, w = image.shape[:2]
    image[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)] = color


def draw_polyline(image, xs, ys, color, *, thickness=2, clip=None):
    """Connect the points ``(xs[i], ys[i])`` (pixel coordinates, floats) with lines; NaN points break the line."""
    x0, y0, x1, y1 = clip if clip is not None else (0, 0, image.shape[1], image.shape[0])
    px, py = [], []
    for i in range(len(xs) - 1):
        a, b = (xs[i], ys[i]), (xs[i + 1], ys[i + 1])
        if not all(math.isfinite(v) for v in (*a, *b)):
            continue
        n = int(math.ceil(max(abs(b[0] - a[0]), abs(b[1] - a[1])))) + 1  # one sample per pixel step
        t = np.linspace(0.0, 1.0, n)
        px.append(a[0] + t * (b[0] - a[0]))
        py.append(a[1] + t * (b[1] - a[1]))
    if len(xs) == 1 and math.isfinite(xs[0]) and math.isfinite(ys[0]):
        px.append(np.array([xs[0]])), py.append(np.array([ys[0]]))
    if not px:
        return
    px, py = np.rint(np.concatenate(px)).astype(int), np.rint(np.concatenate(py)).astype(int)
    for dx in range(thickness):
        for dy in range(thickness):
            qx, qy = px + dx - thickness // 2, py + dy - thickness // 2
            keep = (qx >= x0) & (qx < x1) & (qy >= y0) & (qy < y1)
            image[qy[keep], qx[keep]] = color


def nice_ticks(low, high, *, count=5):
    """About ``count`` round tick values (1, 2 or 5 times a power of ten apart), the first at or below ``low``
    and the last at or above ``high``; returns ``(ticks, step)``."""
    if not high > low:
        low, high = low - 0.5, high + 0.5
    raw = (high - low) / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [i * step for i in range(first, last + 1)], step


def format_tick(value, step):
    """A tick label with as many decimals as the step between ticks needs."""
    decimals = max(0, -int(math.floor(math.log10(step) + 1e-9)))
    text = f"{value:.{decimals}f}"
    return "0" if float(text) == 0 else text


def render(series, *, width=800, height=500, title=None):
    """The plot as an ``[height, width, 3]`` uint8 array (see ``line_plot``)."""
    image = np.full((height, width, 3), WHITE, dtype=np.uint8)
    left, right, top, bottom = 64, 16, 36 if title else 16, 32
    x0, y0, x1, y1 = left, top, width - right, height - bottom  # the plot area, in pixels
    points = [(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)) for xs, ys in series.values()]
    finite = [(xs[m], ys[m]) for xs, ys in points for m in [np.isfinite(xs) & np.isfinite(ys)] if m.any()]
    all_x = np.concatenate([xs for xs, _ in finite]) if finite else np.array([0.0, 1.0])
    all_y = np.concatenate([ys for _, ys in finite]) if finite else np.array([0.0, 1.0])
    xticks, xstep = nice_ticks(all_x.min(), all_x.max())
    yticks, ystep = nice_ticks(all_y.min(), all_y.max())
    (xlo, xhi), (ylo, yhi) = (xticks[0], xticks[-1]), (yticks[0], yticks[-1])  # axes span whole ticks
    to_px = lambda x: x0 + (x - xlo) / (xhi - xlo) * (x1 - 1 - x0)  # noqa: E731
    to_py = lambda y: y1 - 1 - (y - ylo) / (yhi - ylo) * (y1 - 1 - y0)  # noqa: E731

    for t in xticks:  # grid lines, tick marks and labels
        px = int(round(to_px(t)))
        fill_rect(image, px, y0, px + 1, y1, GRID)
        fill_rect(image, px, y1, px + 1, y1 + 5, BLACK)
        label = format_tick(t, xstep)
        draw_text(image, label, px - text_width(label) // 2, y1 + 8)
    for t in yticks:
        py = int(round(to_py(t)))
        fill_rect(image, x0, py, x1, py + 1, GRID)
        fill_rect(image, x0 - 5, py, x0, py + 1, BLACK)
        label = format_tick(t, ystep)
        draw_text(image, label, x0 - 8 - text_width(label), py - GLYPH_H // 2)
    fill_rect(image, x0 - 1, y0, x0, y1 + 1, BLACK)  # the axes
    fill_rect(image, x0 - 1, y1, x1, y1 + 1, BLACK)

    for (name, _), (xs, ys), color in zip(series.items(), points, _colours(len(series))):
        px, py = to_px(xs), to_py(ys)
        draw_polyline(image, px, py, color, clip=(x0, y0, x1, y1))
        if len(xs) <= MARKER_LIMIT:
            for cx, cy in zip(px, py):
                if math.isfinite(cx) and math.isfinite(cy):
                    fill_rect(image, int(round(cx)) - 3, int(round(cy)) - 3, int(round(cx)) + 4,
                              int(round(cy)) + 4, color)

    if title:
        draw_text(image, title, (width - text_width(title, 2)) // 2, 10, scale=2)
    _legend(image, list(series), x1, y0)
    return image


def _colours(n):
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def _legend(image, names, right, top):
    """Colour boxes with the series names, in a framed box at the top right of the plot area."""
    if not names:
        return
    box_w = 12 + 6 + max(text_width(n) for n in names) + 12
    box_h = 8 + 14 * len(names)
    bx, by = right - box_w - 8, top + 8
    fill_rect(image, bx - 1, by - 1, bx + box_w + 1, by + box_h + 1, BLACK)
    fill_rect(image, bx, by, bx + box_w, by + box_h, WHITE)
    for i, (name, color) in enumerate(zip(names, _colours(len(names)))):
        y = by + 5 + 14 * i
        fill_rect(image, bx + 6, y, bx + 16, y + 9, color)
        draw_text(image, name, bx + 22, y + 1)


def png_bytes(image):
    """Encode an ``[H, W, 3]`` uint8 array as PNG: signature, IHDR, one IDAT (zlib, filter 0 rows), IEND."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = image.shape[:2]

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = np.concatenate([np.zeros((height, 1), dtype=np.uint8), image.reshape(height, width * 3)], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, deflate, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
            + chunk(b"IEND", b""))


def line_plot(path, series, *, width=800, height=500, title=None):
    """Write a PNG line plot of ``series`` (``{name: (xs, ys)}``) to ``path``; NaN values leave gaps."""
    if width < 200 or height < 120:
        raise ValueError(f"a plot needs at least 200x120 pixels, got {width}x{height}")
    for name, (xs, ys) in series.items():
        if len(xs) != len(ys):
            raise ValueError(f"series {name!r} has {len(xs)} x values but {len(ys)} y values")
    with open(path, "wb") as f:
        f.write(png_bytes(render(series, width=width, height=height, title=title)))
