"""Reading ``.caffemodel`` files without Caffe.

A caffemodel is a serialised ``caffe.NetParameter`` protocol buffer. We do not ship or compile ``caffe.proto``: the few
messages needed to reach the weights are declared here, in code, with the field numbers of Caffe's
``src/caffe/proto/caffe.proto``, and the ``protobuf`` package parses the file against them. Fields we do not declare
(layer settings, solver state) are skipped by the parser. The parser accepts repeated numbers both packed and unpacked,
as protobuf requires, so every float encoding Caffe ever wrote reads.

Covered: the current ``layer`` field (``LayerParameter``, field 100), the old ``layers`` field (``V1LayerParameter``,
field 2, as in the 2014 VGG16 file) and the V0 layer nested inside it; blob shapes as ``BlobShape`` dims or as the
legacy num/channels/height/width; ``data`` (float) and ``double_data``.

Memory: the file is memory-mapped and parsed once; each blob is copied out as a numpy array only when asked for, so a
500 MB file costs its parsed message plus one layer at a time.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from .checks import WeightsError

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "fcnseg_caffe"

#: (message, [(field, number, type, repeated, message type or None)]), numbers from caffe.proto.
_MESSAGES: tuple[tuple[str, list[tuple[str, int, int, bool, str | None]]], ...] = (
    ("BlobShape", [("dim", 1, _F.TYPE_INT64, True, None)]),
    (
        "BlobProto",
        [
            ("num", 1, _F.TYPE_INT64, False, None),
            ("channels", 2, _F.TYPE_INT64, False, None),
            ("height", 3, _F.TYPE_INT64, False, None),
            ("width", 4, _F.TYPE_INT64, False, None),
            ("data", 5, _F.TYPE_FLOAT, True, None),
            ("shape", 7, _F.TYPE_MESSAGE, False, "BlobShape"),
            ("double_data", 8, _F.TYPE_DOUBLE, True, None),
        ],
    ),
    (
        "LayerParameter",
        [
            ("name", 1, _F.TYPE_BYTES, False, None),
            ("type", 2, _F.TYPE_BYTES, False, None),
            ("blobs", 7, _F.TYPE_MESSAGE, True, "BlobProto"),
        ],
    ),
    (
        "V0LayerParameter",
        [
            ("name", 1, _F.TYPE_BYTES, False, None),
            ("type", 2, _F.TYPE_BYTES, False, None),
            ("blobs", 50, _F.TYPE_MESSAGE, True, "BlobProto"),
        ],
    ),
    (
        "V1LayerParameter",
        [
            ("layer", 1, _F.TYPE_MESSAGE, False, "V0LayerParameter"),
            ("name", 4, _F.TYPE_BYTES, False, None),
            ("type", 5, _F.TYPE_INT32, False, None),  # enum LayerType on the wire: a varint
            ("blobs", 6, _F.TYPE_MESSAGE, True, "BlobProto"),
        ],
    ),
    (
        "NetParameter",
        [
            ("name", 1, _F.TYPE_BYTES, False, None),
            ("layers", 2, _F.TYPE_MESSAGE, True, "V1LayerParameter"),
            ("layer", 100, _F.TYPE_MESSAGE, True, "LayerParameter"),
        ],
    ),
)

#: V1LayerParameter.LayerType values of the layers that carry FCN weights.
V1_LAYER_TYPES = {4: "Convolution", 14: "InnerProduct", 39: "Deconvolution"}
#: V0 layer type strings, same purpose.
V0_LAYER_TYPES = {"conv": "Convolution", "innerproduct": "InnerProduct"}


@lru_cache(maxsize=1)
def _net_parameter_class() -> Any:
    """The ``NetParameter`` message class, built once in a private descriptor pool."""
    file = descriptor_pb2.FileDescriptorProto(name="fcnseg_caffe_subset.proto", package=_PACKAGE, syntax="proto2")
    for message_name, fields in _MESSAGES:
        message = file.message_type.add(name=message_name)
        for field_name, number, field_type, repeated, type_name in fields:
            field = message.field.add(name=field_name, number=number, type=field_type)
            field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if type_name:
                field.type_name = f".{_PACKAGE}.{type_name}"
            if repeated and field_type != _F.TYPE_MESSAGE:
                field.options.packed = True  # how Caffe writes them; unpacked still parses
    pool = descriptor_pool.DescriptorPool()  # private: never clashes with another 'caffe' package
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.NetParameter"))


@dataclass
class CaffeLayer:
    """One layer of a caffemodel: name, type and its parameter blobs (parsed lazily)."""

    name: str
    type: str
    _blobs: Any

    def __len__(self) -> int:
        return len(self._blobs)

    def blob_shapes(self) -> list[tuple[int, ...]]:
        """Shape of each blob as stored (BlobShape dims, or the legacy (num, channels, height, width))."""
        return [_blob_shape(blob) for blob in self._blobs]

    def blob(self, index: int, source: str = "caffemodel") -> np.ndarray:
        """Blob ``index`` as a float32 array of its stored shape (a new array, not a view)."""
        blob = self._blobs[index]
        shape = _blob_shape(blob)
        values = np.array(blob.double_data if len(blob.double_data) else blob.data, dtype=np.float32)
        if values.size != int(np.prod(shape, dtype=np.int64)):
            raise WeightsError(
                f"{source}: layer {self.name!r} blob {index} holds {values.size} values for shape {shape}"
            )
        return values.reshape(shape)


def _blob_shape(blob: Any) -> tuple[int, ...]:
    if blob.HasField("shape"):
        return tuple(int(d) for d in blob.shape.dim)
    return (int(blob.num), int(blob.channels), int(blob.height), int(blob.width))


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def read_caffemodel(path: str | os.PathLike[str]) -> list[CaffeLayer]:
    """Every layer with weights in a ``.caffemodel``, in file order.

    Raises :class:`WeightsError` if the file is missing, is not a
    caffemodel (a prototxt, another format, truncated) or holds no weights.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such caffemodel file")
    net = _net_parameter_class()()
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                raise WeightsError(f"{path}: empty file, not a caffemodel")
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped, memoryview(mapped) as view:
                net.ParseFromString(view)
    except DecodeError as error:
        hint = " (a .prototxt? pass the binary .caffemodel)" if _looks_like_text(path) else ""
        raise WeightsError(f"{path}: not a caffemodel: the protobuf does not parse ({error}){hint}") from None
    layers = []
    for layer in net.layer:
        layers.append(CaffeLayer(_decode(layer.name), _decode(layer.type), layer.blobs))
    for layer in net.layers:
        if layer.HasField("layer"):  # V0: name, type and blobs live in the nested message
            v0 = layer.layer
            kind = _decode(v0.type)
            layers.append(CaffeLayer(_decode(v0.name), V0_LAYER_TYPES.get(kind, kind), v0.blobs))
        else:
            kind = V1_LAYER_TYPES.get(layer.type, f"V1 type {layer.type}")
            layers.append(CaffeLayer(_decode(layer.name), kind, layer.blobs))
    with_blobs = [layer for layer in layers if len(layer)]
    if not with_blobs:
        raise WeightsError(f"{path}: not a caffemodel with weights: {len(layers)} layers and no parameter blobs")
    names = [layer.name for layer in with_blobs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise WeightsError(f"{path}: layer names appear twice: {duplicates}")
    return with_blobs


def _looks_like_text(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(512)
    return bool(head) and all(32 <= b < 127 or b in (9, 10, 13) for b in head)
