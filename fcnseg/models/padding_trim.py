"""The padding trim: skip the work on ``conv1_1``'s zero margin whose results are provably cropped away.

``conv1_1``'s 100-pixel zero margin makes a band of identical rows (and columns)
between the image and the canvas edge in every blob up to the stride-8 pooling.
Those rows are pure repetition: a backbone may pad less, compute its first
stages on the narrower canvas, and re-insert copies of a band row afterwards.

How much can be trimmed is found per input size by a symbolic run of the layer
geometry (:func:`padding_plan`) that proves the re-expanded blob equals the
faithful one row for row; where no trim is proven, none is made. The proof uses
only the geometry (kernels, strides, paddings), never the weights, so the trimmed
forward is the same function of the weights as the faithful one: the same
outputs and the same gradients, up to fp32 summation order.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

#: One layer of the trimmed prefix along an axis: ``("conv" | "pool", kernel, stride, padding)``.
Layer = tuple[str, int, int, int]


@dataclass(frozen=True)
class AxisPlan:
    """How one axis is trimmed: the padding used, and where band rows are re-inserted afterwards.

    ``inserts`` is applied in order to the last trimmed blob along this axis:
    each ``(position, count, source)`` inserts ``count`` copies of row ``source`` before ``position``.
    """

    pad_start: int
    pad_end: int
    inserts: tuple[tuple[int, int, int], ...]


class _Interner:
    """Gives equal windows equal small integers: two rows with one id hold equal values."""

    def __init__(self) -> None:
        self.ids: dict[tuple, int] = {}

    def __call__(self, key: tuple) -> int:
        return self.ids.setdefault(key, len(self.ids) + 1)


_PAD = -1  # a position outside the blob, read as the layer's zero padding


def simulate_axis(length: int, pad_start: int, pad_end: int, layers: Sequence[Layer], intern: _Interner) -> list[int]:
    """Row identities along one axis, from the image through ``layers``.

    The image rows are all distinct; the explicit zero padding of the input is
    one shared identity 0. A convolution row's identity is that of its window
    of input rows (``_PAD`` outside the blob: zero padding, which is not the
    band value after the first layer); a pooling row's likewise. Rows with one
    identity hold equal values in every channel and column (the network is the
    same function of identical windows), which is what the trim relies on.
    """
    rows = [0] * pad_start + [-(i + 2) for i in range(length)] + [0] * pad_end
    for index, (kind, kernel, stride, padding) in enumerate(layers):
        size = len(rows)
        if kind == "conv":
            out = (size + 2 * padding - kernel) // stride + 1
        else:  # Caffe/PyTorch ceil-mode pooling, no padding
            out = -(-(size - kernel) // stride) + 1
            if (out - 1) * stride >= size:
                out -= 1
        new = []
        for j in range(max(out, 0)):
            start = j * stride - padding
            window = tuple(rows[k] if 0 <= k < size else _PAD for k in range(start, start + kernel))
            if kind == "pool":
                window = tuple(w for w in window if w != _PAD)  # ceil mode: partial windows at the end
            new.append(intern((index, window)))
        rows = new
    return rows


def _insert(rows: list, position: int, count: int, source: int) -> list:
    return rows[:position] + [rows[source]] * count + rows[position:]


def expansion(trimmed: list[int], faithful: list[int], n_start: int, n_end: int) -> tuple | None:
    """Inserts that turn the trimmed rows into the faithful ones, or None when there are none."""
    inserts = []
    rows = trimmed
    if n_start:
        first = next((i for i, (a, b) in enumerate(zip(rows, faithful, strict=False)) if a != b), None)
        if first is None or first == 0:
            return None
        inserts.append((first, n_start, first - 1))  # the band row just before the first difference
        rows = _insert(rows, *inserts[-1])
    if n_end:
        last = next((i for i, (a, b) in enumerate(zip(rows[::-1], faithful[::-1], strict=False)) if a != b), None)
        if last is None or last == 0:
            return None
        position = len(rows) - last
        inserts.append((position, n_end, position))
        rows = _insert(rows, *inserts[-1])
    return tuple(inserts) if rows == faithful else None


@functools.lru_cache(maxsize=256)
def axis_plan(length: int, padding: int, layers: tuple[Layer, ...]) -> AxisPlan:
    """The largest proven trim of one axis of ``length`` pixels (cached per size).

    Trims are multiples of the total stride of ``layers``, so pooling windows stay aligned.
    """
    step = 1
    for _, _, stride, _ in layers:
        step *= stride
    intern = _Interner()
    faithful = simulate_axis(length, padding, padding, layers, intern)

    def plan(trim_start: int, trim_end: int) -> AxisPlan | None:
        trimmed = simulate_axis(length, padding - trim_start, padding - trim_end, layers, intern)
        inserts = expansion(trimmed, faithful, trim_start // step, trim_end // step)
        return None if inserts is None else AxisPlan(padding - trim_start, padding - trim_end, inserts)

    candidates = range(padding - padding % step, 0, -step)
    best_start = next((t for t in candidates if plan(t, 0) is not None), 0)
    best_end = next((t for t in candidates if plan(0, t) is not None), 0)
    # Each side was proven alone; prove the pair, giving up on one side if needed.
    for trim_start, trim_end in ((best_start, best_end), (best_start, 0), (0, best_end)):
        found = plan(trim_start, trim_end)
        if found is not None:
            return found
    return AxisPlan(padding, padding, ())


@torch.compiler.disable  # plain Python bookkeeping: torch.compile must not trace it
def padding_plan(padding: int, layers: tuple[Layer, ...], height: int, width: int) -> tuple[AxisPlan, AxisPlan]:
    """The proven trims (rows, columns) of an ``height`` x ``width`` input whose first layer pads ``padding``.

    ``layers`` is the geometry after that first padding, up to the blob where band rows are re-inserted.
    """
    return axis_plan(int(height), padding, layers), axis_plan(int(width), padding, layers)


def apply_inserts(x: torch.Tensor, rows: AxisPlan, cols: AxisPlan) -> torch.Tensor:
    """Re-insert the trimmed band rows and columns into an NCHW blob."""
    for plan, dim in ((rows, 2), (cols, 3)):
        for position, count, source in plan.inserts:
            shape = list(x.shape)
            shape[dim] = count
            copies = x.narrow(dim, source, 1).expand(shape)
            x = torch.cat([x.narrow(dim, 0, position), copies, x.narrow(dim, position, x.shape[dim] - position)], dim)
    return x
