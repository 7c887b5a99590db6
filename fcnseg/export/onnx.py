"""Export a checkpoint to ONNX, kept only once ONNX Runtime reproduces PyTorch.

The ONNX graph takes the *preprocessed* float32 blob ``(N, 3, H, W)`` and returns
logits ``(N, C, H, W)`` (or, exported with ``probabilities=True``, a Softmax over C
appended: output ``probabilities``); batch, height and width are all dynamic. Everything else
a consumer needs travels in the model's ``metadata_props`` as JSON values (read
them with :func:`read_onnx_metadata`, or with onnxruntime alone through
``session.get_modelmeta().custom_metadata_map``): ``preprocessing`` (to turn
uint8 RGB pixels into the blob, see :mod:`fcnseg.preprocessing`), ``classes``,
``palette``, ``ignore_index``, ``model`` (the model config), ``output`` (the output's
name, ``logits`` or ``probabilities``; absent in files exported before it existed: logits)
and ``tiling`` (what tiled inference needs without the model: :func:`tiling_metadata`).

Exporters: ``"dynamo"`` (``torch.onnx.export(dynamo=True)``, the default) traces
with ``torch.export`` and symbolic H and W, so the crops (slices whose bounds
depend on the input's size) become shape arithmetic in the graph; torch.export
has to prove the crop fits for every size, the same invariant the model checks.
``"torchscript"`` is the legacy tracer (``dynamo=False``): also correct here,
because the crop bounds are read from ``Shape`` ops, and about 7x faster to run,
but deprecated by PyTorch since 2.9. Both are verified the same way.

Verification (:func:`check_onnx_parity`): random uint8 images of several sizes,
odd ones included, go through :func:`fcnseg.preprocess`, PyTorch and ONNX Runtime;
the export fails unless, at every size, ``max|onnx - torch| <= rtol * max|torch| +
atol`` (torch: the logits, or their softmax over C for a probabilities export) and the
arg-max masks agree on at least ``min_mask_agreement`` of the pixels.
The file is written atomically: when verification fails nothing is left at the
output path.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch

from ..checkpoint import Checkpoint, load_checkpoint
from ..files import atomic_path
from ..models.contract import ForwardMemory, SegmentationModel
from ..preprocessing import Preprocessing, preprocess
from .agreement import pixel_agreement

Exporter = Literal["dynamo", "torchscript"]
EXPORTERS: tuple[str, ...] = ("dynamo", "torchscript")

#: Sizes run through both runtimes after writing: odd and non-square ones, and a batch of two.
DEFAULT_CHECK_SHAPES: tuple[tuple[int, int, int, int], ...] = ((1, 3, 37, 53), (2, 3, 64, 64), (1, 3, 101, 67))

#: Value of the ``format`` metadata entry; bumped if the layout of the metadata changes.
METADATA_FORMAT = "fcnseg-onnx/1"
INPUT_NAME, OUTPUT_NAME = "input", "logits"
PROBABILITIES_NAME = "probabilities"
_DYNAMIC_AXES = {0: "batch", 2: "height", 3: "width"}
#: ONNX protobuf files cannot exceed 2 GiB (weights would need an external data file).
_PROTOBUF_LIMIT = 2**31 - 1

_INSTALL_HINT = "ONNX export needs the 'export' extra: pip install 'fcnseg[export]' (onnx, onnxruntime, onnxscript)"


class ExportError(RuntimeError):
    """The model could not be exported, or the export does not reproduce PyTorch."""


@dataclass(frozen=True)
class ParityTolerance:
    """When ONNX Runtime's logits count as equal to PyTorch's.

    ``max|onnx - torch| <= rtol * max|torch| + atol`` at every checked size, and the
    arg-max masks agree on at least ``min_mask_agreement`` of the pixels. Measured
    on CPU float32: the worst relative difference is about 1e-6 (see the README).
    """

    rtol: float = 1e-4
    atol: float = 1e-5
    min_mask_agreement: float = 0.999


@dataclass(frozen=True)
class ParityResult:
    """The comparison at one input shape."""

    shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    max_abs_diff: float
    max_abs_logit: float
    allowed_diff: float
    mask_agreement: float
    min_mask_agreement: float
    output: str = OUTPUT_NAME

    @property
    def ok(self) -> bool:
        expected_shape = (self.shape[0], self.output_shape[1], *self.shape[2:])
        return (
            self.output_shape == expected_shape
            and self.max_abs_diff <= self.allowed_diff
            and self.mask_agreement >= self.min_mask_agreement
        )

    def describe(self) -> str:
        shape = "x".join(map(str, self.shape))
        verdict = "ok" if self.ok else "MISMATCH"
        return (
            f"{shape}: max|diff| {self.max_abs_diff:.3g} (allowed {self.allowed_diff:.3g}, max|{self.output}| "
            f"{self.max_abs_logit:.3g}), masks agree on {100 * self.mask_agreement:.3f}% "
            f"(need {100 * self.min_mask_agreement:.1f}%), output {'x'.join(map(str, self.output_shape))} -> {verdict}"
        )


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how it was verified."""

    path: Path
    exporter: str
    results: list[ParityResult] = field(default_factory=list)
    tolerance: ParityTolerance = field(default_factory=ParityTolerance)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as error:
        raise ExportError(f"{_INSTALL_HINT} ({error})") from None
    return onnx, onnxruntime


class WithSoftmax(torch.nn.Module):
    """``model`` followed by a softmax over the classes: (N, C, H, W) probabilities.

    Everything else of the model contract (:class:`~fcnseg.models.contract.SegmentationModel`)
    is the wrapped model's.
    """

    def __init__(self, model: SegmentationModel) -> None:
        super().__init__()
        self.model = model

    num_classes = property(lambda self: self.model.num_classes)
    in_channels = property(lambda self: self.model.in_channels)
    preprocessing = property(lambda self: self.model.preprocessing)
    config = property(lambda self: self.model.config)
    heads = property(lambda self: self.model.heads)
    grid = property(lambda self: self.model.grid)
    exact_tiling = property(lambda self: self.model.exact_tiling)
    fast_paths = property(lambda self: self.model.fast_paths)

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.prepare_input(images)

    def mean_pixel(self) -> tuple[int, ...]:
        return self.model.mean_pixel()

    def set_fast_paths(self, enabled: bool) -> WithSoftmax:
        self.model.set_fast_paths(enabled)
        return self

    def context_margin(self) -> int:
        return self.model.context_margin()

    def estimate_forward_bytes(self, height: int, width: int) -> int:
        return self.model.estimate_forward_bytes(height, width)

    def forward_memory(self) -> ForwardMemory:
        return self.model.forward_memory()

    def forward(self, blob: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(blob), dim=1)


def tiling_metadata(model: SegmentationModel) -> dict[str, Any]:
    """What tiled inference needs of ``model``, for a runtime that has only the file.

    The pooling ``grid``, ``context_margin``, ``exact_tiling``, and ``forward_memory``: the model's
    own memory estimate as data (:class:`~fcnseg.models.contract.ForwardMemory`), from which the
    runtime model estimates exactly what ``model.estimate_forward_bytes`` does.
    """
    return {
        "grid": int(model.grid),
        "context_margin": int(model.context_margin()),
        "exact_tiling": bool(model.exact_tiling),
        "forward_memory": model.forward_memory().to_dict(),
    }


def onnx_metadata(checkpoint: Checkpoint, output: str = OUTPUT_NAME) -> dict[str, str]:
    """The ``metadata_props`` entries of an export with output ``output``: name -> JSON text."""
    model = checkpoint.model
    meaning = "class probabilities (softmax over C)" if output == PROBABILITIES_NAME else "class scores"
    return {
        "format": json.dumps(METADATA_FORMAT),
        "model": json.dumps(model.config),
        "classes": json.dumps(list(checkpoint.classes)),
        "palette": json.dumps([list(map(int, colour)) for colour in checkpoint.palette]),
        "ignore_index": json.dumps(int(checkpoint.ignore_index)),
        "preprocessing": json.dumps(model.preprocessing.to_dict()),
        "output": json.dumps(output),
        "tiling": json.dumps(tiling_metadata(model)),
        "input": json.dumps(
            f"'{INPUT_NAME}': float32 (N, 3, H, W) = fcnseg.preprocess(uint8 RGB images, preprocessing); "
            f"'{output}': float32 (N, C, H, W) {meaning}, class = argmax over C"
        ),
    }


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The decoded metadata of an fcnseg ONNX export (``preprocessing`` as a :class:`Preprocessing`)."""
    onnx, _ = _require_onnx()
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError and friends
        raise ExportError(f"{path}: not an ONNX model ({error})") from None
    props = {entry.key: entry.value for entry in proto.metadata_props}
    if json.loads(props.get("format", "null")) != METADATA_FORMAT:
        raise ExportError(
            f"{path}: an ONNX model, but not an fcnseg export (metadata 'format' is {props.get('format')!r})"
        )
    decoded = {key: json.loads(value) for key, value in props.items()}
    decoded["preprocessing"] = Preprocessing.from_dict(decoded["preprocessing"])
    decoded["palette"] = [tuple(colour) for colour in decoded["palette"]]
    decoded.setdefault("output", OUTPUT_NAME)  # files written before the entry existed output logits
    return decoded


def _export_proto(
    model: SegmentationModel, example: torch.Tensor, exporter: str, opset: int | None, output: str = OUTPUT_NAME
) -> Any:
    """The model as an in-memory ONNX ``ModelProto`` with dynamic batch, height and width.

    The plain forward is exported: the fast paths' padding trim is planned per input size
    in Python, which a graph with dynamic height and width cannot hold.
    """
    model.set_fast_paths(False)
    onnx, _ = _require_onnx()
    if exporter == "dynamo":
        try:
            import onnxscript  # noqa: F401  (torch's dynamo exporter needs it)
        except ImportError as error:
            raise ExportError(f"{_INSTALL_HINT} ({error}); or use --exporter torchscript") from None
        from torch.export import Dim

        dims = {axis: Dim(name, min=1) for axis, name in _DYNAMIC_AXES.items()}
        program = torch.onnx.export(
            cast(torch.nn.Module, model),
            (example,),
            None,
            dynamo=True,
            dynamic_shapes=({**dims},),
            input_names=[INPUT_NAME],
            output_names=[output],
            opset_version=opset,
            verbose=False,
        )
        assert program is not None  # the dynamo exporter returns the program
        return program.model_proto
    if exporter == "torchscript":
        buffer = io.BytesIO()
        axes = {INPUT_NAME: _DYNAMIC_AXES, output: _DYNAMIC_AXES}
        with warnings.catch_warnings():
            # The deprecation notice, and the tracer's note that the model's crop-size check
            # becomes a constant: the crop itself is traced from Shape ops and stays dynamic.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                cast(torch.nn.Module, model),
                (example,),
                buffer,  # type: ignore[arg-type]  # it writes to a file object too; the stubs name paths only
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[output],
                dynamic_axes=axes,
                opset_version=opset or 17,
            )
        return onnx.load_from_string(buffer.getvalue())
    raise ExportError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")


def _name_dynamic_dims(proto: Any) -> None:
    """Name the input's and output's dynamic axes batch/height/width.

    The dynamo exporter names the output's H as the crop expression it traced
    (``Min(height + 27, ...) - 27``), which always equals ``height``; parity
    checking verifies that the output has the input's size.
    """
    for value in (proto.graph.input[0], proto.graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        for axis, name in _DYNAMIC_AXES.items():
            dims[axis].dim_param = name


def check_onnx_parity(
    model: SegmentationModel,
    onnx_model: str | os.PathLike[str] | bytes,
    *,
    shapes: Sequence[Sequence[int]] = DEFAULT_CHECK_SHAPES,
    tolerance: ParityTolerance = ParityTolerance(),
    seed: int = 0,
) -> list[ParityResult]:
    """Run PyTorch and ONNX Runtime on random images of each shape (N, 3, H, W) and compare.

    Inputs are random uint8 RGB images passed through the model's own
    preprocessing, so the blob has the range the network sees in use. The graph's
    first output is compared with ``model``'s (a :class:`WithSoftmax` for probabilities).
    """
    _, onnxruntime = _require_onnx()
    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    session = onnxruntime.InferenceSession(source, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name
    generator = torch.Generator().manual_seed(seed)
    model = model.eval().to("cpu")
    results = []
    for shape in shapes:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 4 or shape[1] != 3 or min(shape) < 1:
            raise ValueError(f"check shapes must be (N, 3, H, W) with positive sizes, got {shape}")
        images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        blob = preprocess(images, model.preprocessing)
        with torch.inference_mode():
            expected = model(blob).numpy()
        actual = session.run([output], {INPUT_NAME: blob.numpy()})[0]
        max_logit = float(np.abs(expected).max())
        if actual.shape == expected.shape:
            diff = float(np.abs(actual - expected).max())
            agreement = pixel_agreement(actual.argmax(1), expected.argmax(1))
        else:
            diff, agreement = float("inf"), 0.0
        results.append(
            ParityResult(
                shape=shape,
                output_shape=tuple(actual.shape),
                max_abs_diff=diff,
                max_abs_logit=max_logit,
                allowed_diff=tolerance.rtol * max_logit + tolerance.atol,
                mask_agreement=agreement,
                min_mask_agreement=tolerance.min_mask_agreement,
                output=output,
            )
        )
    return results


def export_onnx(
    checkpoint: Checkpoint | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    exporter: Exporter = "dynamo",
    opset: int | None = None,
    check_shapes: Sequence[Sequence[int]] = DEFAULT_CHECK_SHAPES,
    tolerance: ParityTolerance = ParityTolerance(),
    probabilities: bool = False,
) -> ExportReport:
    """Export a checkpoint (or a loaded :class:`Checkpoint`) to ``out`` as verified ONNX.

    ``probabilities=True`` appends a Softmax over the classes: the graph's output is
    ``probabilities`` instead of ``logits`` (metadata ``output`` says which).

    Raises :class:`ExportError` when exporting fails or when ONNX Runtime does not
    reproduce PyTorch within ``tolerance`` at every ``check_shapes``; then ``out``
    is not written (an earlier file there is left as it was).
    """
    onnx, _ = _require_onnx()
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    if not check_shapes:
        raise ExportError("at least one check shape is needed: an unverified export is never reported as a success")
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint, fast_paths=False)
    model = checkpoint.model.eval().to("cpu")
    output = PROBABILITIES_NAME if probabilities else OUTPUT_NAME
    if probabilities:
        model = WithSoftmax(model).eval()
    example = preprocess(torch.zeros(1, 3, 64, 64, dtype=torch.uint8), model.preprocessing)
    try:
        proto = _export_proto(model, example, exporter, opset, output)
    except ExportError:
        raise
    except Exception as error:
        raise ExportError(f"torch.onnx.export ({exporter}) failed: {type(error).__name__}: {error}") from error
    _name_dynamic_dims(proto)
    for key, value in onnx_metadata(checkpoint, output).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = (
        f"fcnseg {checkpoint.model.config.get('name', 'FCN')} ({len(checkpoint.classes)} classes); see metadata 'input'"
    )
    data = proto.SerializeToString()
    if len(data) > _PROTOBUF_LIMIT:
        raise ExportError(f"the model is {len(data) / 2**30:.1f} GiB: over the 2 GiB limit of a single ONNX file")
    onnx.checker.check_model(proto)

    with atomic_path(out) as tmp:
        # Verify the file as written; it is renamed onto ``out`` only if it passes.
        tmp.write_bytes(data)
        results = check_onnx_parity(model, tmp, shapes=check_shapes, tolerance=tolerance)
        report = ExportReport(path=Path(out), exporter=exporter, results=results, tolerance=tolerance)
        if not report.ok:
            details = "\n  ".join(r.describe() for r in results)
            raise ExportError(f"ONNX Runtime does not reproduce PyTorch; {out} was not written:\n  {details}")
    return report
