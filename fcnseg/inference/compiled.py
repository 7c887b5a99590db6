"""A checkpoint run in OpenVINO fp32: exported once to a verified ONNX file, cached by fingerprint, reused.

``fcnseg predict|eval|serve CHECKPOINT`` run with ``--runtime auto`` (their default) go through
:func:`load_compiled_checkpoint`: on the CPU, in float32, a model whose family runs faster in
OpenVINO than in the torch fast path (:data:`COMPILED_FAMILIES`, measured by
``benchmarks/predict_backend.py``) is exported to ONNX once (:func:`fcnseg.export.onnx.export_onnx`,
verified against the torch forward by ONNX Runtime), checked again in OpenVINO against the torch
forward with the export's tolerance, cached, and run by :class:`~fcnseg.inference.runtimes.OnnxModel`
in the same :class:`~fcnseg.inference.predictor.Predictor`. Everything else runs in torch, silently:
a GPU, bfloat16, ``--no-fast-paths``, MC-dropout (the command asks for torch), models whose input or
outputs the export does not carry (several heads, colour + HHA), or OpenVINO / the export extra not
installed. An export that fails (refused, or not reproducing torch) is recorded, said in one line on
stderr, and the checkpoint runs in torch.

The cache is ``<cache_dir()>/compiled/`` (``$FCNSEG_HOME``, see :func:`fcnseg.weights.download.cache_dir`):
``<fingerprint>.onnx`` and ``<fingerprint>.json``. The fingerprint is the SHA-256 of the checkpoint
file's bytes, the export settings and the versions of fcnseg, torch, onnx, onnxruntime and openvino,
so a changed file or an upgrade makes a new entry. Both files are written atomically, the ``.json``
last; an entry is trusted only when the ``.onnx`` has the SHA-256 its ``.json`` records, anything
else is made again. A failed export's ``.json`` records the reason (delete it to try again).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..checkpoint import Checkpoint, described_checkpoint, load_checkpoint, read_description
from ..device import resolve_device
from ..files import atomic_path, atomic_write_text
from ..models.contract import SegmentationModel
from .runtimes import OnnxModel, RuntimeBackendError

if TYPE_CHECKING:
    from ..export.onnx import Exporter

#: The runtime a compiled checkpoint runs in.
COMPILED_RUNTIME = "openvino"
#: Model families (substrings of the config name) that run faster in OpenVINO fp32 than in the torch
#: fast path, 1 thread, 360x480 (benchmarks/predict_backend.py, loaded machine): MobileNetV3 0.54-0.73
#: of torch's time, ResNet-18 0.90. The VGG nets stay in torch: OpenVINO took 1.03-1.11x their time.
COMPILED_FAMILIES: tuple[str, ...] = ("mobilenet_v3", "resnet")
#: The exporters tried in turn: the legacy tracer exports MobileNetV3 in ~3 s, dynamo in ~30 s.
EXPORTERS: tuple[Exporter, ...] = ("torchscript", "dynamo")
ENTRY_FORMAT = "fcnseg-compiled/1"
_PACKAGES = ("torch", "onnx", "onnxruntime", "openvino")


class CompileError(RuntimeError):
    """The checkpoint could not be compiled: refused by the export, or not reproducing the torch forward."""


def cache_folder() -> Path:
    """Where compiled checkpoints are kept: ``<cache_dir()>/compiled``."""
    from ..weights.download import cache_dir

    return cache_dir() / "compiled"


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    found = {"fcnseg": __version__}
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


def export_settings() -> dict[str, Any]:
    """What shapes the compiled file besides the checkpoint: exporters, checked shapes, tolerance, runtime."""
    from dataclasses import asdict

    from ..export.onnx import DEFAULT_CHECK_SHAPES, ParityTolerance

    return {
        "exporters": list(EXPORTERS),
        "check_shapes": [list(s) for s in DEFAULT_CHECK_SHAPES],
        "tolerance": asdict(ParityTolerance()),
        "runtime": COMPILED_RUNTIME,
        "dtype": "float32",
    }


def fingerprint(checkpoint: str | Path) -> str:
    """SHA-256 of the checkpoint file's bytes, :func:`export_settings` and the package versions."""
    from ..weights.download import file_digest

    key = {
        "checkpoint_sha256": file_digest(Path(checkpoint), "sha256"),
        "settings": export_settings(),
        "versions": _versions(),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def torch_reason(
    config: dict[str, Any], *, dtype: str = "float32", device: Any = None, fast_paths: bool = True
) -> str | None:
    """Why a checkpoint with model ``config`` runs in torch rather than compiled; None: compile it."""
    from ..models import create_model

    if dtype != "float32":
        return f"{dtype} runs under torch autocast"
    if resolve_device(device).type != "cpu":
        return "a GPU runs torch"
    if not fast_paths:
        return "--no-fast-paths asks for the torch forward as written"
    if not any(family in str(config.get("name")) for family in COMPILED_FAMILIES):
        return f"{config.get('name')} runs as fast in the torch fast path"
    missing = [name for name in ("openvino", "onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        return f"{', '.join(missing)} not installed"
    options = dict(config)
    with torch.device("meta"):
        model = create_model(options.pop("name"), **options)
    if model.heads or model.in_channels != 3:  # the contract's members (fcnseg.models.SegmentationModel)
        return "the export carries one head of RGB input only"
    return None


def _openvino_parity(model: SegmentationModel, path: Path) -> list[Any]:
    """The export's parity check (same images, sizes and tolerance) with OpenVINO fp32 as the runtime."""
    from ..export.agreement import pixel_agreement
    from ..export.onnx import DEFAULT_CHECK_SHAPES, OUTPUT_NAME, ParityResult, ParityTolerance

    tolerance, compiled = ParityTolerance(), OnnxModel(path, COMPILED_RUNTIME)
    generator, results = torch.Generator().manual_seed(0), []
    for shape in DEFAULT_CHECK_SHAPES:
        blob = model.prepare_input(torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator))
        with torch.inference_mode():
            expected, actual = model(blob), compiled(blob)
        same = actual.shape == expected.shape
        largest = float(expected.abs().max())
        results.append(
            ParityResult(
                shape=tuple(shape),
                output_shape=tuple(actual.shape),
                max_abs_diff=float((actual - expected).abs().max()) if same else float("inf"),
                max_abs_logit=largest,
                allowed_diff=tolerance.rtol * largest + tolerance.atol,
                mask_agreement=pixel_agreement(actual.argmax(1).numpy(), expected.argmax(1).numpy()) if same else 0.0,
                min_mask_agreement=tolerance.min_mask_agreement,
                output=OUTPUT_NAME,
            )
        )
    return results


def _export(checkpoint: Path, out: Path) -> str:
    """Write the verified ONNX file of ``checkpoint`` to ``out``; the exporter used. Raises :class:`CompileError`."""
    from ..export.onnx import export_onnx

    loaded = load_checkpoint(checkpoint, fast_paths=False)  # a damaged checkpoint raises CheckpointError, as in torch
    problems = []
    for exporter in EXPORTERS:
        try:  # any failure of the exporters or runtimes on this model is a reason to run torch, not to stop
            with warnings.catch_warnings():  # the tracers' notes are not the user's concern here
                warnings.simplefilter("ignore")
                export_onnx(loaded, out, exporter=exporter)
            results = _openvino_parity(loaded.model, out)
        except Exception as error:
            problems.append(f"{exporter}: {type(error).__name__}: {(str(error).splitlines() or [''])[0]}")
            continue
        if all(result.ok for result in results):
            return exporter
        problems.append(f"{exporter}: OpenVINO does not reproduce torch: " + "; ".join(r.describe() for r in results))
    raise CompileError(" | ".join(problems))


def _read_entry(path: Path) -> dict[str, Any] | None:
    try:
        entry = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return entry if isinstance(entry, dict) and entry.get("format") == ENTRY_FORMAT else None


def _note(text: str) -> None:
    print(f"fcnseg: {text}", file=sys.stderr, flush=True)


def compiled_file(checkpoint: str | Path) -> Path:
    """The verified ONNX file of ``checkpoint`` in the cache, made now unless a trusted one is there.

    Raises :class:`CompileError` when the export fails (also when an earlier run recorded that it failed).
    """
    from ..weights.download import file_digest

    checkpoint = Path(checkpoint)
    key = fingerprint(checkpoint)
    onnx_path, entry_path = cache_folder() / f"{key}.onnx", cache_folder() / f"{key}.json"
    entry = _read_entry(entry_path)
    if entry is not None and entry.get("fingerprint") == key:
        if "failed" in entry:
            raise CompileError(f"{entry['failed']} (recorded in {entry_path}; delete it to try again)")
        if onnx_path.is_file() and file_digest(onnx_path, "sha256") == entry.get("onnx_sha256"):
            return onnx_path
    if entry_path.exists() or onnx_path.exists():
        _note(f"the compiled file of {checkpoint} in {cache_folder()} is damaged or incomplete; making it again")
    _note(f"compiling {checkpoint} for {COMPILED_RUNTIME} (once; cached in {cache_folder()})")
    record: dict[str, Any] = {
        "format": ENTRY_FORMAT,
        "fingerprint": key,
        "checkpoint": str(checkpoint.resolve()),
        "settings": export_settings(),
        "versions": _versions(),
    }
    try:
        with atomic_path(onnx_path) as tmp:
            record["exporter"] = _export(checkpoint, tmp)
            record["onnx_sha256"] = file_digest(tmp, "sha256")
    except CompileError as error:
        atomic_write_text(entry_path, json.dumps({**record, "failed": str(error)}, indent=2) + "\n")
        raise
    atomic_write_text(entry_path, json.dumps(record, indent=2) + "\n")
    return onnx_path


def load_compiled_checkpoint(
    source: str | os.PathLike[str], *, dtype: str = "float32", device: Any = None, fast_paths: bool = True
) -> Checkpoint | None:
    """The checkpoint ``source`` with its model compiled (:class:`OnnxModel` in OpenVINO fp32), or None: run torch.

    Classes, palette, recipe and ``extra`` come from the checkpoint's description, as
    :func:`fcnseg.checkpoint.load_checkpoint` gives them. A bad checkpoint raises as it would in torch.
    """
    from ..weights import resolve_checkpoint

    path = resolve_checkpoint(source)
    description = read_description(path)
    if torch_reason(description["config"], dtype=dtype, device=device, fast_paths=fast_paths) is not None:
        return None
    try:
        onnx_path = compiled_file(path)
        model = OnnxModel(onnx_path, COMPILED_RUNTIME)
    except (CompileError, RuntimeBackendError, OSError) as error:
        _note(f"{source} runs in torch: its {COMPILED_RUNTIME} compilation failed: {error}")
        return None
    # The export records exact_tiling (squeeze-and-excitation tiles are inexact) in its tiling metadata.
    return described_checkpoint(model, description, {"onnx": str(onnx_path), "runtime": COMPILED_RUNTIME})
