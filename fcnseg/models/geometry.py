"""Coordinate maps: where a layer's output pixels sit in its input.

Every layer of an FCN is an affine map between pixel coordinates, per axis:
a convolution or pooling with kernel ``k``, stride ``s`` and padding ``p`` puts
output pixel ``y`` at input coordinate ``s*y + (k-1)/2 - p``; a transposed
convolution inverts that. Composing the maps along two paths that meet gives
the crop that aligns one blob onto the other — the way the reference Caffe
``Crop`` layer finds its offsets. The FCN heads compute every crop this way
instead of typing the numbers in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class CoordMap:
    """``input_coordinate = scale * output_coordinate + shift`` along one axis."""

    scale: Fraction = Fraction(1)
    shift: Fraction = Fraction(0)

    def then(self, layer: CoordMap) -> CoordMap:
        """Map of this path followed by ``layer`` (``layer``'s input is our output)."""
        return CoordMap(self.scale * layer.scale, self.scale * layer.shift + self.shift)


IDENTITY = CoordMap()


def conv_map(kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> CoordMap:
    """Map of a convolution or pooling layer."""
    extent = (kernel - 1) * dilation + 1
    return CoordMap(Fraction(stride), Fraction(extent - 1, 2) - padding)


def deconv_map(kernel: int, stride: int = 1, padding: int = 0) -> CoordMap:
    """Map of a transposed convolution: the inverse of the matching convolution."""
    forward = conv_map(kernel, stride, padding)
    return CoordMap(1 / forward.scale, -forward.shift / forward.scale)


def compose(layers: Iterable[CoordMap], start: CoordMap = IDENTITY) -> CoordMap:
    """Map from the end of a chain of layers back to the chain's input."""
    result = start
    for layer in layers:
        result = result.then(layer)
    return result


def crop_offset(blob: CoordMap, reference: CoordMap) -> int:
    """Offset that crops ``blob`` so that its pixels sit on ``reference``'s pixels.

    Both maps must lead back to the same input (the image). Cropping ``blob`` as
    ``blob[off : off + len(reference)]`` aligns it; the offset must be a
    non-negative integer and both blobs must share one scale, otherwise no
    crop can align them and the network is ill-formed.
    """
    if blob.scale != reference.scale:
        raise ValueError(f"cannot crop: scales differ ({blob.scale} vs {reference.scale})")
    offset = (reference.shift - blob.shift) / blob.scale
    if offset.denominator != 1 or offset < 0:
        raise ValueError(f"cannot crop: offset {offset} is not a non-negative integer")
    return int(offset)


def receptive_field(layers: Iterable[tuple[int, int]]) -> int:
    """Receptive field (px) of one output cell of a chain of ``(kernel extent, stride)`` layers."""
    field, step = 1, 1
    for extent, stride in layers:
        field += (extent - 1) * step
        step *= stride
    return field
