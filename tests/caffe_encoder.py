"""A tiny .caffemodel writer for the tests, independent of fcnseg's reader.

It writes protocol-buffer wire bytes by hand (varints, keys, length-delimited
fields), with the field numbers of Caffe's caffe.proto:

- NetParameter: name 1, layers 2 (V1LayerParameter), layer 100 (LayerParameter)
- LayerParameter: name 1, type 2, bottom 3, top 4, blobs 7, convolution_param 106
- V1LayerParameter: bottom 2, top 3, name 4, type 5 (enum), blobs 6
- BlobProto: num 1, channels 2, height 3, width 4, data 5 (packed float),
  shape 7 (BlobShape: dim 1, packed int64), double_data 8
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

import numpy as np

# V1LayerParameter.LayerType values.
V1_CONVOLUTION = 4
V1_INNER_PRODUCT = 14
V1_DECONVOLUTION = 39
V1_RELU = 18

WIRE_VARINT, WIRE_FIXED64, WIRE_BYTES, WIRE_FIXED32 = 0, 1, 2, 5


def varint(value: int) -> bytes:
    """Base-128 varint; negative numbers as their 64-bit two's complement (10 bytes)."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def field_key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def bytes_field(number: int, payload: bytes) -> bytes:
    return field_key(number, WIRE_BYTES) + varint(len(payload)) + payload


def string_field(number: int, text: str) -> bytes:
    return bytes_field(number, text.encode("utf-8"))


def varint_field(number: int, value: int) -> bytes:
    return field_key(number, WIRE_VARINT) + varint(value)


def blob(
    array: np.ndarray,
    *,
    shape: str = "dims",
    values: str = "packed",
    stored_shape: Sequence[int] | None = None,
) -> bytes:
    """A BlobProto.

    shape: "dims" (BlobShape, field 7) or "legacy" (num/channels/height/width,
    the array's shape padded on the left with ones to 4-D, as old Caffe wrote).
    values: "packed" floats, "unpacked" floats (one fixed32 field per value) or
    "double" (packed double_data).
    stored_shape: write this shape instead of the array's (for mismatch tests).
    """
    array = np.asarray(array)
    dims = tuple(stored_shape) if stored_shape is not None else array.shape
    out = b""
    if shape == "legacy":
        if len(dims) > 4:
            raise ValueError("legacy blobs have at most 4 dims")
        for number, size in zip((1, 2, 3, 4), (1,) * (4 - len(dims)) + tuple(dims), strict=True):
            out += varint_field(number, size)
    flat = array.ravel()
    if values == "packed":
        out += bytes_field(5, flat.astype("<f4").tobytes())
    elif values == "unpacked":
        out += b"".join(field_key(5, WIRE_FIXED32) + struct.pack("<f", float(v)) for v in flat)
    elif values == "double":
        out += bytes_field(8, flat.astype("<f8").tobytes())
    else:
        raise ValueError(values)
    if shape == "dims":
        out += bytes_field(7, bytes_field(1, b"".join(varint(d) for d in dims)))
    elif shape != "legacy":
        raise ValueError(shape)
    return out


def layer_v2(name: str, layer_type: str, blobs: Iterable[bytes], bottom: str = "in", top: str | None = None) -> bytes:
    """A LayerParameter (the current ``layer`` field), with bottom/top and a convolution_param
    the reader must skip."""
    out = string_field(1, name) + string_field(2, layer_type) + string_field(3, bottom) + string_field(4, top or name)
    out += b"".join(bytes_field(7, b) for b in blobs)
    out += bytes_field(106, varint_field(1, 7))  # convolution_param { num_output: 7 }: not for the reader
    return out


def layer_v1(name: str, layer_type: int, blobs: Iterable[bytes], bottom: str = "in", top: str | None = None) -> bytes:
    """A V1LayerParameter (the old ``layers`` field), type as the V1 enum."""
    out = string_field(2, bottom) + string_field(3, top or name) + string_field(4, name) + varint_field(5, layer_type)
    out += b"".join(bytes_field(6, b) for b in blobs)
    return out


def net(layers: Iterable[bytes] = (), layers_v1: Iterable[bytes] = (), name: str = "test-net") -> bytes:
    """A NetParameter holding V2 ``layer`` (field 100) and/or V1 ``layers`` (field 2) messages."""
    out = string_field(1, name)
    out += b"".join(bytes_field(2, layer) for layer in layers_v1)
    out += b"".join(bytes_field(100, layer) for layer in layers)
    return out


def fcn_caffemodel(
    model,
    *,
    version: str = "v2",
    shape: str = "dims",
    values: str = "packed",
    inner_product: bool = False,
    extra_layers: Sequence[bytes] = (),
) -> bytes:
    """A caffemodel holding an fcnseg model's weights under the reference layer names.

    inner_product: store fc6/fc7 as InnerProduct (2-D weights), as the VGG16 ILSVRC file does.
    At-once models also get their Scale layers (scale_pool4/3, one value per channel).
    """
    encoded = []
    for name, module in model.reference_layers().items():
        arrays = [p.detach().cpu().numpy() for _, p in module.named_parameters(recurse=False)]
        if name.startswith("upscore"):
            kind, v1_kind = "Deconvolution", V1_DECONVOLUTION
        elif inner_product and name in ("fc6", "fc7"):
            kind, v1_kind = "InnerProduct", V1_INNER_PRODUCT
            arrays[0] = arrays[0].reshape(arrays[0].shape[0], -1)
        else:
            kind, v1_kind = "Convolution", V1_CONVOLUTION
        blobs = [blob(a, shape=shape, values=values) for a in arrays]
        encoded.append(layer_v2(name, kind, blobs) if version == "v2" else layer_v1(name, v1_kind, blobs))
    for scale_name, score_name in (("scale_pool4", "score_pool4"), ("scale_pool3", "score_pool3")):
        if hasattr(model, scale_name):
            channels = getattr(model, score_name).in_channels
            value = np.full(channels, float(getattr(model, scale_name)), dtype=np.float32)
            encoded.append(layer_v2(scale_name, "Scale", [blob(value, shape=shape, values=values)]))
    encoded += list(extra_layers)
    return net(encoded) if version == "v2" else net(layers_v1=encoded)
