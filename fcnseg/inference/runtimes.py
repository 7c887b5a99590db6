"""Runtime backends of the one inference path: an exported ONNX file run by ONNX Runtime or OpenVINO.

:class:`OnnxModel` wraps an fcnseg ONNX export (:mod:`fcnseg.export.onnx`, fp32 or int8) as a
module that maps a preprocessed blob (N, 3, H, W) to logits (N, C, H, W) on the CPU, and
keeps the model contract (:class:`fcnseg.models.contract.SegmentationModel`): ``preprocessing``,
``num_classes``, ``config`` and ``heads`` from the file's metadata, and for tiling ``grid``,
``exact_tiling``, ``context_margin()`` and the memory estimate from its ``tiling`` entry, which
the export wrote from the model itself (files exported before the entry held all of them rebuild
the model's geometry from its config, without weights). So the Predictor runs it unchanged:
same preprocessing, sizes, tiling and outputs as the torch path.

Runtimes (``RUNTIMES``): ``torch`` (the checkpoint itself), ``onnxruntime`` and ``openvino``
(the ``runtimes`` extra). OpenVINO runs with ``INFERENCE_PRECISION_HINT`` f32 unless
``dtype="bfloat16"`` is asked for: left alone, it picks bf16 on CPUs that have it, which
changes the numerics. Both runtimes get torch's thread count unless told otherwise.
A file whose output is ``probabilities`` gives their logarithm as logits (equal to the
logits up to a per-pixel constant: the same masks, softmax and confidence).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import Checkpoint
from ..models.contract import ForwardMemory
from ..preprocessing import preprocess

RUNTIMES: tuple[str, ...] = ("torch", "onnxruntime", "openvino")
#: The runtimes of an .onnx file, the default first: OpenVINO ran int8 fastest and fp32 as fast as
#: ONNX Runtime (benchmarks/runtimes.py).
ONNX_RUNTIMES: tuple[str, ...] = ("openvino", "onnxruntime")
_OPENVINO_PRECISION = {"float32": "f32", "bfloat16": "bf16"}


class RuntimeBackendError(ValueError):
    """A runtime that is unknown, not installed, or asked for something it cannot do."""


def is_onnx_file(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(".onnx")


def installed_runtimes() -> list[str]:
    """The ONNX runtimes importable here, the default first."""
    import importlib.util

    def found(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except ValueError:  # a module set to None in sys.modules: not importable
            return False

    return [name for name in ONNX_RUNTIMES if found(name)]


def resolve_runtime(path: str | os.PathLike[str], runtime: str | None = None) -> str:
    """The runtime that runs ``path``: ``torch`` for a checkpoint, an ONNX runtime for an ``.onnx`` file.

    ``runtime`` None picks ``torch`` or the first of :func:`installed_runtimes` by the file
    (``onnxruntime`` when none is installed, so the error names it); a runtime that cannot
    run the file is refused in one line.
    """
    if runtime is not None and runtime not in RUNTIMES:
        raise RuntimeBackendError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if is_onnx_file(path):
        if runtime == "torch":
            raise RuntimeBackendError(f"{path} is an ONNX export: run it with onnxruntime or openvino, not torch")
        return runtime or (installed_runtimes() or ["onnxruntime"])[0]
    if runtime not in (None, "torch"):
        raise RuntimeBackendError(
            f"the {runtime} runtime runs an ONNX export and {path} is not an .onnx file; "
            f"export it first: fcnseg export {path} --out model.onnx"
        )
    return "torch"


def require(runtime: str) -> Any:
    """The runtime's Python module, or one clear line naming the extra to install."""
    if runtime not in ONNX_RUNTIMES:
        raise RuntimeBackendError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    try:
        return __import__(runtime)
    except ImportError:
        raise RuntimeBackendError(f"the {runtime} runtime is not installed: pip install 'fcnseg[runtimes]'") from None


def _onnxruntime_session(path: Path, dtype: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    ort = require("onnxruntime")
    if dtype != "float32":
        raise RuntimeBackendError(f"onnxruntime runs float32 here, not {dtype} (openvino offers bfloat16)")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda blob: session.run(None, {name: blob})[0]


@functools.cache
def _openvino_core() -> Any:
    """One OpenVINO Core per process, as OpenVINO advises (each holds plugins and their thread pools)."""
    return require("openvino").Core()


def _openvino_model(path: Path, dtype: str, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    if dtype not in _OPENVINO_PRECISION:
        raise RuntimeBackendError(f"openvino runs {' or '.join(_OPENVINO_PRECISION)} here, not {dtype}")
    config = {
        "INFERENCE_PRECISION_HINT": _OPENVINO_PRECISION[dtype],
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
    }
    # Dynamic H and W: one compiled model for every size. A model reshaped to one size was no faster
    # in benchmarks/runtimes.py, and each compiled size holds its own copy of the weights.
    compiled = _openvino_core().compile_model(str(path), "CPU", config)
    request = compiled.create_infer_request()
    return lambda blob: request.infer({0: blob})[0].copy()  # the request reuses its output buffer


_SESSIONS = {"onnxruntime": _onnxruntime_session, "openvino": _openvino_model}


class OnnxModel(torch.nn.Module):
    """An fcnseg ONNX export run by ``runtime``: ``model(blob) -> logits`` (float32, on the CPU).

    Args:
        path: an ``.onnx`` file written by ``fcnseg export`` (fp32 or ``--int8``).
        runtime: ``onnxruntime`` or ``openvino``.
        dtype: ``float32``, or ``bfloat16`` (OpenVINO only; changes numerics).
        threads: runtime threads (None: ``torch.get_num_threads()``).

    One call at a time (OpenVINO's single infer request), as ``fcnseg serve`` runs a model.
    """

    in_channels = 3  # an export takes the RGB blob (fcnseg.export.onnx)
    fast_paths = False  # the runtime optimises the graph its own way

    def __init__(
        self,
        path: str | os.PathLike[str],
        runtime: str = ONNX_RUNTIMES[0],
        *,
        dtype: str = "float32",
        threads: int | None = None,
    ) -> None:
        super().__init__()
        from ..export.onnx import ExportError, read_onnx_metadata, tiling_metadata
        from ..models import create_model

        if runtime not in ONNX_RUNTIMES:
            raise RuntimeBackendError(f"an ONNX file runs in {' or '.join(ONNX_RUNTIMES)}, not {runtime!r}")
        require(runtime)  # before reading the file: a missing runtime is the first thing to say
        self.path, self.runtime, self.dtype = Path(path), runtime, dtype
        try:
            self.metadata = read_onnx_metadata(self.path)
        except ExportError as error:
            raise RuntimeBackendError(str(error)) from None
        self.config: dict[str, Any] = dict(self.metadata["model"])
        self.preprocessing = self.metadata["preprocessing"]
        self.num_classes = len(self.metadata["classes"])
        heads = self.config.get("heads")
        self.heads = None if heads is None else tuple((str(name), int(classes)) for name, classes in heads)
        self.probabilities_output = self.metadata["output"] == "probabilities"
        tiling = self.metadata.get("tiling")
        if tiling is None or "forward_memory" not in tiling:
            # Exported before the entry (or all of it) existed: the geometry from the config, no weights.
            config = dict(self.config)
            with torch.device("meta"):
                tiling = tiling_metadata(create_model(config.pop("name"), **config))
        self.grid, self._margin = int(tiling["grid"]), int(tiling["context_margin"])
        self.exact_tiling = bool(tiling["exact_tiling"])
        self._memory = ForwardMemory.from_dict(tiling["forward_memory"])
        self._run = _SESSIONS[runtime](self.path, dtype, threads or torch.get_num_threads())

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        """The blob of uint8 RGB images: :func:`fcnseg.preprocess` with the file's ``preprocessing``."""
        return preprocess(images, self.preprocessing)

    def mean_pixel(self) -> tuple[int, ...]:
        """The RGB uint8 pixel that preprocesses to about zero."""
        return self.preprocessing.mean_rgb_uint8()

    def context_margin(self) -> int:
        """Context (px) around a tile that makes tiled logits equal whole-image ones (the model's)."""
        return self._margin

    def estimate_forward_bytes(self, height: int, width: int) -> int:
        """The torch model's estimate of one pass's memory (see :func:`fcnseg.export.onnx.tiling_metadata`)."""
        return self._memory.bytes(height, width)

    def forward_memory(self) -> ForwardMemory:
        """The torch model's :meth:`~fcnseg.models.contract.SegmentationModel.forward_memory`, as the file holds it."""
        return self._memory

    def set_fast_paths(self, enabled: bool) -> OnnxModel:
        """Nothing to switch: the runtime optimises the graph its own way."""
        return self

    def forward(self, blob: torch.Tensor) -> torch.Tensor:
        output = torch.from_numpy(self._run(np.ascontiguousarray(blob.detach().cpu().float().numpy())))
        return torch.log(output) if self.probabilities_output else output

    def extra_repr(self) -> str:
        return f"{self.path.name}, runtime={self.runtime}, dtype={self.dtype}"


def load_onnx_checkpoint(
    path: str | os.PathLike[str],
    runtime: str | None = None,
    *,
    dtype: str = "float32",
    device: str | torch.device | None = None,
    threads: int | None = None,
) -> Checkpoint:
    """A :class:`~fcnseg.checkpoint.Checkpoint` whose model is an :class:`OnnxModel` (classes, palette from the file).

    ``runtime`` None is chosen by :func:`resolve_runtime`. The runtimes run on the CPU: a ``device``
    other than ``cpu`` or ``auto`` is refused.
    """
    runtime = resolve_runtime(path, runtime)
    if device is not None and str(device) not in ("cpu", "auto"):
        raise RuntimeBackendError(
            f"the {runtime} runtime runs on the CPU, not on {device}; use the torch runtime with a checkpoint for a GPU"
        )
    model = OnnxModel(path, runtime, dtype=dtype, threads=threads)
    return Checkpoint(
        model=model,
        classes=list(model.metadata["classes"]),
        palette=list(model.metadata["palette"]),
        ignore_index=int(model.metadata["ignore_index"]),
        extra={"onnx": str(path), "runtime": model.runtime},
    )


def load_model_file(
    source: str | os.PathLike[str],
    runtime: str | None = None,
    *,
    dtype: str = "float32",
    device: str | torch.device | None = None,
) -> tuple[Checkpoint, str]:
    """The model behind a checkpoint file, a registry name or an ``.onnx`` export, in the runtime that runs it.

    ``runtime`` None is chosen by :func:`resolve_runtime`: ``torch`` loads the checkpoint, an ONNX
    runtime the export (:func:`load_onnx_checkpoint`, on the CPU: ``device`` is only checked).
    Returns the checkpoint and the dtype its :class:`~fcnseg.inference.predictor.Predictor` runs in:
    ``dtype`` for torch (autocast), ``float32`` for an export, whose runtime runs ``dtype`` itself.
    """
    from ..checkpoint import load_checkpoint
    from ..weights import resolve_checkpoint

    runtime = resolve_runtime(source, runtime)
    if runtime == "torch":
        return load_checkpoint(resolve_checkpoint(source)), dtype
    return load_onnx_checkpoint(source, runtime, dtype=dtype, device=device), "float32"
