"""Line plots drawn with Unicode braille characters, for a quick look in the terminal.

A braille character is a 2 x 4 grid of dots: code point U+2800 plus one bit per dot, so a
canvas of W x H characters has 2W x 4H addressable pixels, eight times a plain character grid.
Each series is drawn as straight segments between its points (Bresenham's line algorithm) in
its own colour; where two series share a character cell the later one gives the colour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text

# bit of each dot, indexed [row][column] within a character (rows 0..3 top to bottom)
DOT_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
BRAILLE_BASE = 0x2800
COLORS = ("cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "bright_magenta")


class BrailleCanvas:
    def __init__(self, width: int, height: int):
        self.width, self.height = width, height  # in characters
        self.bits = [[0] * width for _ in range(height)]
        self.colors: list[list[str | None]] = [[None] * width for _ in range(height)]

    def set(self, px: int, py: int, color: str) -> None:
        """Turn on the dot at pixel (px, py), origin at the bottom left."""
        row = self.height * 4 - 1 - py
        if 0 <= px < self.width * 2 and 0 <= row < self.height * 4:
            self.bits[row // 4][px // 2] |= DOT_BITS[row % 4][px % 2]
            self.colors[row // 4][px // 2] = color

    def line(self, x0: int, y0: int, x1: int, y1: int, color: str) -> None:
        """Bresenham: the dots nearest the straight segment between two pixels."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            self.set(x0, y0, color)
            if (x0, y0) == (x1, y1):
                return
            e2 = 2 * err
            if e2 >= dy:
                err, x0 = err + dy, x0 + sx
            if e2 <= dx:
                err, y0 = err + dx, y0 + sy

    def rows(self) -> list[Text]:
        lines = []
        for bits, colors in zip(self.bits, self.colors):
            line = Text()
            for b, c in zip(bits, colors):
                line.append(chr(BRAILLE_BASE + b), style=c or "")
            lines.append(line)
        return lines


def braille_plot(
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    width: int = 72,
    height: int = 18,
    x_label: str = "",
    y_label: str = "",
) -> Text:
    """A plot of several (label, xs, ys) series with y ticks, an x range and a legend, as rich Text.

    Non-finite points are skipped (a diverged run's curve simply ends).
    """
    points = [(x, y) for _, xs, ys in series for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
    if not points:
        return Text("(nothing to plot)")
    x_lo, x_hi = _padded(min(p[0] for p in points), max(p[0] for p in points))
    y_lo, y_hi = _padded(min(p[1] for p in points), max(p[1] for p in points))
    canvas = BrailleCanvas(width, height)

    def pixel(x: float, y: float) -> tuple[int, int]:
        return (round((x - x_lo) / (x_hi - x_lo) * (width * 2 - 1)), round((y - y_lo) / (y_hi - y_lo) * (height * 4 - 1)))

    for i, (_, xs, ys) in enumerate(series):
        color = COLORS[i % len(COLORS)]
        pixels = [pixel(x, y) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
        for a, b in zip(pixels, pixels[1:] or pixels):
            canvas.line(*a, *b, color)

    ticks = {0: y_hi, height // 2: (y_lo + y_hi) / 2, height - 1: y_lo}
    gutter = max(len(_num(v)) for v in ticks.values()) + 1
    out = Text(f"{y_label}\n" if y_label else "")
    for r, row in enumerate(canvas.rows()):
        out.append(f"{_num(ticks[r]):>{gutter - 1}} ┤" if r in ticks else " " * gutter + "│")
        out.append_text(row)
        out.append("\n")
    out.append(" " * gutter + "└" + "─" * width + "\n")
    left, right = _num(x_lo), _num(x_hi)
    middle = f" {x_label} " if x_label else ""
    out.append(" " * (gutter + 1) + left + middle.center(width - len(left) - len(right)) + right + "\n")
    for i, (label, _, _) in enumerate(series):
        out.append("  ━━ ", style=COLORS[i % len(COLORS)])
        out.append(f"{label}\n")
    return out


def _padded(lo: float, hi: float) -> tuple[float, float]:
    # a flat series still needs a non-empty range to map onto the canvas
    return (lo - 0.5, hi + 0.5) if lo == hi else (lo, hi)


def _num(v: float) -> str:
    return f"{v:.4g}"
