"""Exporting a checkpoint for other runtimes, each file kept only once it reproduces PyTorch.

- :mod:`.onnx` — the fp32 (or probabilities) ONNX export, its metadata and the parity check.
- :mod:`.int8` — post-training int8 quantization of that export on the user's own images.
- :mod:`.agreement` — pixel agreement, the share of pixels whose class matches the reference's.
"""

from .onnx import (
    DEFAULT_CHECK_SHAPES,
    EXPORTERS,
    ExportError,
    ExportReport,
    ParityTolerance,
    export_onnx,
    read_onnx_metadata,
)

__all__ = [
    "DEFAULT_CHECK_SHAPES",
    "EXPORTERS",
    "ExportError",
    "ExportReport",
    "ParityTolerance",
    "export_onnx",
    "read_onnx_metadata",
]
