"""Post-training static int8 quantization of an ONNX export, calibrated on the user's own images.

:func:`export_int8` exports the checkpoint to ONNX (fp32, verified as :func:`fcnseg.export.onnx.export_onnx`
does), quantizes it with statistics of the network's activations on the calibration images,
and keeps the file only if it predicts what the fp32 model predicts.

Quantizers, both writing a QDQ ONNX file (weights int8 per output channel, activations 8-bit;
QuantizeLinear/DequantizeLinear pairs that ONNX Runtime and OpenVINO turn into int8 kernels):

- ``nncf`` (default): NNCF's post-training quantization of the ONNX graph; methods (presets) ``performance`` (symmetric
  activations, NNCF's default for CNNs) and ``mixed`` (asymmetric); min-max ranges and fast bias correction (each
  layer's bias re-fitted so the int8 layer's mean output matches fp32's on the calibration images).
- ``onnxruntime``: ``onnxruntime.quantization.quantize_static``, QDQ, per-channel, uint8 activations; methods
  (calibration) ``minmax`` and ``percentile`` (99.999th, 2048 bins). Its ``Entropy`` method is left out: through
  ``quantize_static`` it runs with 128 histogram bins and 128 quantized bins (defaults it does not let a caller change,
  onnxruntime 1.32), so the best threshold is always the full range and the file equals MinMax's (every scale identical,
  measured).

Measured side by side in ``benchmarks/runtimes.py`` (README): NNCF's file agrees better with
fp32 and runs fastest in OpenVINO.

Accuracy control (``accuracy_control=True``, NNCF only): after the plain quantization NNCF ranks the int8 layers by how
much agreement with fp32 each costs on the calibration images and puts them back in fp32 one at a time until the masks
agree on ``min_agreement`` of the pixels (measured in ONNX Runtime, with a small margin for the other runtimes); the
report counts the layers left in fp32. For models whose plain int8 file misses the bar: a from-scratch net with many
near-ties between its two best classes.

Verification: the written file runs through the one :class:`~fcnseg.inference.predictor.Predictor` in
every installed runtime, and its masks are compared with the fp32 checkpoint's (torch) on every
calibration image; it is kept only if, in each runtime, at least ``min_agreement`` of all their
pixels (pooled) agree. With labelled calibration data the mean IU of both on those images is
reported. The file is written atomically: a refused file leaves nothing at the output path.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import Checkpoint, load_checkpoint
from ..evaluation.metrics import ConfusionMatrix
from ..files import atomic_path
from ..inference.predictor import Predictor
from ..inference.runtimes import installed_runtimes
from ..preprocessing import preprocess
from .agreement import PixelAgreement
from .onnx import (
    DEFAULT_CHECK_SHAPES,
    INPUT_NAME,
    Exporter,
    ExportError,
    ParityTolerance,
    _name_dynamic_dims,
    _require_onnx,
    export_onnx,
)

METHODS: dict[str, tuple[str, ...]] = {"nncf": ("performance", "mixed"), "onnxruntime": ("minmax", "percentile")}
QUANTIZERS: tuple[str, ...] = tuple(METHODS)
#: Pooled share of calibration pixels whose int8 class must equal the fp32 model's, in every runtime.
DEFAULT_MIN_AGREEMENT = 0.99
DEFAULT_CALIBRATION_IMAGES = 64


class QuantizationError(ExportError):
    """The model could not be quantized, or the int8 file does not agree with fp32."""


class Int8SettingsError(QuantizationError, ValueError):
    """Settings :func:`export_int8` refuses before any work (bad input, as a ``ValueError`` is)."""


def check_int8_settings(quantizer: str, method: str | None, min_agreement: float, accuracy_control: bool) -> str:
    """The method to quantize with (``method`` None: the quantizer's first), or :class:`Int8SettingsError`.

    ``fcnseg export --int8`` asks this before it loads anything; :func:`export_int8` asks it too.
    """
    if quantizer not in METHODS:
        raise Int8SettingsError(f"unknown quantizer {quantizer!r}; choose one of {', '.join(QUANTIZERS)}")
    method = method or METHODS[quantizer][0]
    if method not in METHODS[quantizer]:
        raise Int8SettingsError(
            f"--method: the {quantizer} quantizer has methods {', '.join(METHODS[quantizer])}, not {method!r}"
        )
    if not 0 < min_agreement <= 1:
        raise Int8SettingsError(
            f"--min-agreement: the agreement threshold is a fraction in (0, 1], got {min_agreement}"
        )
    if accuracy_control and quantizer != "nncf":
        raise Int8SettingsError(f"--accuracy-control is NNCF's; the {quantizer} quantizer has none")
    return method


@dataclass
class CalibrationSet:
    """uint8 RGB images (3, H, W) to calibrate and verify on, with their label masks (H, W) and class names if known."""

    images: list[torch.Tensor]
    masks: list[torch.Tensor] | None
    source: str
    classes: list[str] | None = None
    skipped: list[str] = field(default_factory=list)  # files of a folder that could not be read, with why


def _spread(count: int, limit: int | None) -> list[int]:
    """``limit`` indices spread evenly over ``range(count)`` (all of them without a limit)."""
    if limit is None or limit >= count:
        return list(range(count))
    return [int(i * count / limit) for i in range(limit)]


def calibration_folder(
    folder: str | os.PathLike[str], limit: int | None = DEFAULT_CALIBRATION_IMAGES
) -> CalibrationSet:
    """Images of a folder (sorted, ``limit`` of them spread over it), at their own sizes.

    A file that cannot be read (truncated, not an image) is skipped and listed in ``skipped`` with
    its reason, as ``fcnseg predict`` does, and the next readable image of the folder takes its
    place, so ``limit`` images are used whenever the folder holds that many readable ones. Enough
    is one: :class:`ValueError` only when no image of the folder can be read.
    """
    from ..predict.images import ImageError, list_images, load_image

    if not Path(folder).is_dir():
        raise ValueError(
            f"--calibrate {folder}: not a folder of images (give --calibrate-data KIND for a dataset split)"
        )
    paths, problems, _ = list_images([folder])  # other files of the folder are skipped
    if not paths:
        raise ValueError(problems[0])
    wanted = len(_spread(len(paths), limit))
    candidates = [*_spread(len(paths), limit), *range(len(paths))]  # the spread picks, then the rest as stand-ins
    images: dict[int, torch.Tensor] = {}
    skipped, tried = list(problems), set()
    for start in candidates:
        # an unreadable pick is replaced by the next readable file after it (the spread stays roughly even)
        for index in (i for i in range(start, len(paths)) if i not in tried and len(images) < wanted):
            tried.add(index)
            try:
                images[index] = load_image(paths[index])
                break
            except ImageError as error:
                skipped.append(str(error))
    if not images:
        raise ValueError(
            f"--calibrate {folder}: none of its {len(paths)} image files can be read; the first: {skipped[0]}"
        )
    return CalibrationSet([images[i] for i in sorted(images)], None, str(folder), skipped=skipped)


def calibration_split(
    kind: str, root: str | None, split: str, limit: int | None = DEFAULT_CALIBRATION_IMAGES, **options: Any
) -> CalibrationSet:
    """Labelled images of a dataset split (:func:`fcnseg.data.open_dataset`), ``limit`` of them spread over it."""
    from ..data import open_dataset

    dataset = open_dataset(kind, root, split, **options)
    items = [dataset[i] for i in _spread(len(dataset), limit)]
    return CalibrationSet(
        [image for image, _ in items],
        [mask for _, mask in items],
        f"{kind} {root or ''} {split}".replace("  ", " "),
        list(dataset.classes),
    )


@dataclass(frozen=True)
class Agreement:
    """The int8 file against fp32 in one runtime, over the calibration images."""

    runtime: str
    pixels: float  # pooled share of pixels with the same class
    worst_image: float
    mean_iu: tuple[float, float] | None  # (fp32, int8) on the labelled images, else None
    error: str | None = None  # the runtime cannot run this file (e.g. ONNX Runtime and some NNCF zero points)

    def describe(self, threshold: float) -> str:
        if self.error is not None:
            return f"{self.runtime}: cannot run this int8 file ({self.error}) -> not for this runtime"
        verdict = "ok" if self.pixels >= threshold else "REFUSED"
        text = (
            f"{self.runtime}: masks agree with fp32 on {100 * self.pixels:.2f}% of pixels (worst image "
            f"{100 * self.worst_image:.2f}%; need {100 * threshold:g}%)"
        )
        if self.mean_iu:
            text += (
                f", mean IU {self.mean_iu[0]:.4f} -> {self.mean_iu[1]:.4f} ({self.mean_iu[1] - self.mean_iu[0]:+.4f})"
            )
        return f"{text} -> {verdict}"


@dataclass
class Int8Report:
    """What :func:`export_int8` wrote and how it was verified."""

    path: Path
    quantizer: str
    method: str
    images: int
    min_agreement: float
    agreements: list[Agreement] = field(default_factory=list)
    seconds: float = 0.0
    accuracy_control: bool = False
    fp32_layers: tuple[int, int] = (0, 0)  # (layers with weights left in fp32, layers with weights)

    @property
    def ran(self) -> list[Agreement]:
        """The runtimes that could run the file."""
        return [a for a in self.agreements if a.error is None]

    @property
    def ok(self) -> bool:
        """At least one runtime ran the file, and every one that did agrees with fp32 enough."""
        return bool(self.ran) and all(a.pixels >= self.min_agreement for a in self.ran)


#: Agreement kept in hand by accuracy control below ``min_agreement``: the target is measured in ONNX
#: Runtime on whole images, the verification afterwards in every installed runtime through the Predictor.
ACCURACY_CONTROL_MARGIN = 0.001


class _NoCudaRuntimeNotice(logging.Filter):
    """Drops torch's "No CUDA runtime is found, using CUDA_HOME=..." and nothing else.

    NNCF's backend check imports ``nncf.torch``, which imports ``torch.utils.cpp_extension``; on a machine with a CUDA
    toolkit but no GPU that import logs this notice, which says nothing about an ONNX quantization (it runs on the CPU).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No CUDA runtime is found")


@contextlib.contextmanager
def _without_cuda_runtime_notice() -> Iterator[None]:
    logger, notice = logging.getLogger("torch.utils.cpp_extension"), _NoCudaRuntimeNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


@_without_cuda_runtime_notice()
def _quantize_nncf(
    fp32: Path, blobs: list, method: str, restore_agreement: tuple[list[torch.Tensor], float] | None = None
) -> Any:
    """NNCF's quantization of ``fp32``; with ``restore_agreement`` ``(fp32 masks, min_agreement)``, its accuracy
    control."""
    try:
        import nncf
    except ImportError:
        raise QuantizationError(
            "the nncf quantizer needs the 'int8' extra: pip install 'fcnseg[int8]' (or --quantizer onnxruntime)"
        ) from None
    onnx, _ = _require_onnx()
    nncf.set_log_level(logging.ERROR)
    preset = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}[method]
    dataset = nncf.Dataset(blobs, lambda blob: {INPUT_NAME: blob})
    if restore_agreement is None:
        return nncf.quantize(onnx.load(str(fp32)), dataset, preset=preset, subset_size=len(blobs))
    masks, min_agreement = restore_agreement
    validation = nncf.Dataset(list(zip(blobs, masks, strict=True)), lambda item: {INPUT_NAME: item[0]})
    max_drop = max(0.0, 1.0 - min_agreement - ACCURACY_CONTROL_MARGIN)
    return nncf.quantize_with_accuracy_control(
        _unshare_weights(onnx.load(str(fp32))),
        dataset,
        validation,
        _MaskAgreement(),
        max_drop=max_drop,
        drop_type=nncf.DropType.ABSOLUTE,
        preset=preset,
        subset_size=len(blobs),
    )


def _unshare_weights(proto: Any) -> Any:
    """Each ``Identity(initializer)`` replaced by a copy of the initializer under the Identity's output name.

    The torchscript exporter shares equal tensors this way (the frozen bilinear kernels of two upsampling
    layers); NNCF can put a layer back in fp32 only when its weights are an initializer of its own.
    """
    onnx, _ = _require_onnx()
    initializers = {tensor.name: tensor for tensor in proto.graph.initializer}
    outputs = {value.name for value in proto.graph.output}
    for node in list(proto.graph.node):
        if node.op_type == "Identity" and node.input[0] in initializers and node.output[0] not in outputs:
            copy = onnx.TensorProto()
            copy.CopyFrom(initializers[node.input[0]])
            copy.name = node.output[0]
            proto.graph.initializer.append(copy)
            proto.graph.node.remove(node)
    return proto


class _MaskAgreement:
    """NNCF's validation function: pooled share of pixels whose class equals the fp32 mask (ONNX Runtime).

    Also the share of each image (NNCF ranks the layers by them). One session per model: NNCF calls
    this once per image while it ranks, with the same model.
    """

    def __init__(self) -> None:
        self._model: Any = None
        self._session: Any = None

    def _run(self, model: Any, blob: Any) -> Any:
        _, onnxruntime = _require_onnx()
        if model is not self._model:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            self._session = onnxruntime.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
            self._model = model
        return self._session.run(None, {INPUT_NAME: blob})[0][0].argmax(0)

    def __call__(self, model: Any, items: Any) -> tuple[float, list[float]]:
        agreement = PixelAgreement()
        for blob, fp32_mask in items:
            agreement.add(self._run(model, blob), fp32_mask)
        return agreement.pooled, agreement.shares


def count_fp32_layers(proto: Any) -> tuple[int, int]:
    """(layers with weights whose weights are not int8-quantized, layers with weights) of a QDQ graph."""
    produced_by = {output: node for node in proto.graph.node for output in node.output}
    with_weights = [
        node
        for node in proto.graph.node
        if node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul") and len(node.input) > 1
    ]
    fp32 = sum(
        1 for node in with_weights if getattr(produced_by.get(node.input[1]), "op_type", None) != "DequantizeLinear"
    )
    return fp32, len(with_weights)


def _quantize_onnxruntime(fp32: Path, blobs: list, method: str, folder: Path) -> Any:
    onnx, _ = _require_onnx()
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.blobs = iter(blobs)

        def get_next(self) -> dict | None:
            blob = next(self.blobs, None)
            return None if blob is None else {INPUT_NAME: blob}

    # Symbolic shape inference cannot follow the crops' shape arithmetic; ONNX's own inference suffices.
    prepared, quantized = folder / "prepared.onnx", folder / "int8.onnx"
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    calibration = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[method]
    quantize_static(
        str(prepared),
        str(quantized),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=calibration,
    )
    return onnx.load(str(quantized))


def _agreement(
    runtime: str,
    path: Path,
    calibration: CalibrationSet,
    reference: list[torch.Tensor],
    num_classes: int,
    ignore_index: int,
) -> Agreement:
    from ..inference.runtimes import OnnxModel

    predictor = Predictor(OnnxModel(path, runtime))
    agreement = PixelAgreement()
    matrices = [ConfusionMatrix(num_classes, ignore_index) for _ in range(2)] if calibration.masks else None
    for index, (image, fp32_mask) in enumerate(zip(calibration.images, reference, strict=True)):
        mask = predictor.mask(image)
        agreement.add(mask, fp32_mask)
        if matrices:
            for matrix, predicted in zip(matrices, (fp32_mask, mask), strict=True):
                assert calibration.masks is not None  # matrices exist only for labelled calibration images
                matrix.update(predicted.long(), calibration.masks[index])
    mean_iu = None
    if matrices:
        fp32_iu, int8_iu = (float(m.compute()["mean_iu"]) for m in matrices)
        mean_iu = (fp32_iu, int8_iu)
    return Agreement(runtime, agreement.pooled, agreement.worst, mean_iu)


def _first_line(error: BaseException, limit: int = 300) -> str:
    line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def export_int8(
    checkpoint: Checkpoint | str | os.PathLike[str],
    out: str | os.PathLike[str],
    calibration: CalibrationSet,
    *,
    quantizer: str = "nncf",
    method: str | None = None,
    min_agreement: float = DEFAULT_MIN_AGREEMENT,
    accuracy_control: bool = False,
    runtimes: Sequence[str] | None = None,
    exporter: Exporter = "dynamo",
    opset: int | None = None,
    check_shapes: Sequence[Sequence[int]] = DEFAULT_CHECK_SHAPES,
    tolerance: ParityTolerance = ParityTolerance(),
) -> Int8Report:
    """Export ``checkpoint`` to ``out`` as an int8 QDQ ONNX file calibrated on ``calibration``, verified.

    ``method`` None is the quantizer's first (see :data:`METHODS`). The fp32 export is checked against PyTorch first
    (``exporter``, ``opset``, ``check_shapes``, ``tolerance`` as for :func:`~fcnseg.export.onnx.export_onnx`). Raises
    :class:`QuantizationError` when quantizing fails or when the int8 masks agree with fp32 on less than
    ``min_agreement`` of the calibration pixels in any of ``runtimes`` (default: every installed one); then nothing is
    written at ``out``. ``accuracy_control`` (NNCF only) puts layers back in fp32 until ``min_agreement`` is reached.
    """
    started = time.perf_counter()
    method = check_int8_settings(quantizer, method, min_agreement, accuracy_control)
    if not calibration.images:
        raise QuantizationError(f"no calibration images in {calibration.source}")
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint, fast_paths=False)
    onnx, _ = _require_onnx()
    runtimes = list(runtimes or installed_runtimes())
    blobs = [preprocess(image[None], checkpoint.model.preprocessing).numpy() for image in calibration.images]
    predictor = Predictor(checkpoint.model, device="cpu", fast_paths=True)
    reference = [predictor.mask(image) for image in calibration.images]
    with tempfile.TemporaryDirectory(prefix="fcnseg-int8-") as folder:
        fp32 = Path(folder) / "fp32.onnx"
        export_onnx(checkpoint, fp32, exporter=exporter, opset=opset, check_shapes=check_shapes, tolerance=tolerance)
        try:
            if quantizer == "nncf":
                proto = _quantize_nncf(fp32, blobs, method, (reference, min_agreement) if accuracy_control else None)
            else:
                proto = _quantize_onnxruntime(fp32, blobs, method, Path(folder))
        except QuantizationError:
            raise
        except Exception as error:
            raise QuantizationError(f"{quantizer} quantization failed: {type(error).__name__}: {error}") from error
        metadata = {entry.key: entry.value for entry in onnx.load(str(fp32), load_external_data=False).metadata_props}
    metadata["quantization"] = json.dumps(
        {
            "format": "QDQ int8",
            "quantizer": quantizer,
            "method": method,
            "calibration": calibration.source,
            "images": len(calibration.images),
            "min_agreement": min_agreement,
            "accuracy_control": accuracy_control,
        }
    )
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    _name_dynamic_dims(proto)
    proto.doc_string = f"fcnseg int8 ({quantizer} {method}, {len(blobs)} calibration images); see metadata 'input'"

    report = Int8Report(
        Path(out),
        quantizer,
        method,
        len(blobs),
        min_agreement,
        accuracy_control=accuracy_control,
        fp32_layers=count_fp32_layers(proto),
    )
    with atomic_path(out) as tmp:  # renamed onto ``out`` only if every runtime agrees with fp32
        tmp.write_bytes(proto.SerializeToString())
        for runtime in runtimes:
            try:
                agreement = _agreement(
                    runtime, tmp, calibration, reference, predictor.num_classes, checkpoint.ignore_index
                )
            except Exception as error:  # the runtime refuses a node of the file; another may run it
                agreement = Agreement(runtime, 0.0, 0.0, None, error=f"{type(error).__name__}: {_first_line(error)}")
            report.agreements.append(agreement)
        report.seconds = time.perf_counter() - started
        if not report.ok:
            details = "\n  ".join(a.describe(min_agreement) for a in report.agreements)
            hint = (
                "\n  (--accuracy-control keeps the layers that cost most agreement in fp32 until it is met)"
                if quantizer == "nncf" and not accuracy_control
                else ""
            )
            problem = "does not agree with fp32" if report.ran else "cannot be run by any installed runtime"
            raise QuantizationError(f"the int8 model {problem}; {out} was not written:\n  {details}{hint}")
    return report
