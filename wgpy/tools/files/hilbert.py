"""Where a prefix lies on a Hilbert curve laid over a square: the geometry of ``wgpy map``.

The square stands for one "root" prefix. Its addresses run along a Hilbert curve, so every
aligned prefix below the root is one connected region whose area is exactly its share of the
root: a square when it has an even number of bits below the root, two adjacent squares (a 2:1
rectangle) when odd. An address keeps its place whatever else is drawn, and neighbours in the
address space stay neighbours on the page.

Coordinates are exact fractions of the unit square (x to the right, y downwards).
"""

from __future__ import annotations

from fractions import Fraction

__all__ = ["Rect", "cell", "region"]

Rect = tuple[Fraction, Fraction, Fraction, Fraction]
"""(x, y, width, height) in the unit square."""


def cell(side: int, index: int) -> tuple[int, int]:
    """The (x, y) cell of step ``index`` of the Hilbert curve over a ``side`` × ``side`` grid
    (``side`` a power of two). The curve's first quarter is always the top-left quadrant, its
    second the bottom-left, then bottom-right and top-right, at every size, so the four cells
    ``4i .. 4i+3`` of a grid twice as fine are exactly cell ``i`` split in four."""
    x = y = 0
    step = 1
    rest = index
    while step < side:
        rx = 1 & (rest // 2)
        ry = 1 & (rest ^ rx)
        if ry == 0:
            if rx == 1:
                x, y = step - 1 - x, step - 1 - y
            x, y = y, x
        x += step * rx
        y += step * ry
        rest //= 4
        step *= 2
    return x, y


def region(depth: int, index: int) -> Rect:
    """The region of the ``index``-th prefix that is ``depth`` bits longer than the root."""
    if depth % 2 == 0:
        side = 1 << (depth // 2)
        x, y = cell(side, index)
        unit = Fraction(1, side)
        return x * unit, y * unit, unit, unit
    x0, y0, size, _ = region(depth + 1, 2 * index)
    x1, y1, _, _ = region(depth + 1, 2 * index + 1)
    left, top = min(x0, x1), min(y0, y1)
    return left, top, max(x0, x1) + size - left, max(y0, y1) + size - top
