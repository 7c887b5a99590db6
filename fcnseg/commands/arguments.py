"""Argument types shared by several sub-commands."""

from __future__ import annotations

import argparse
import json
from typing import Any


def key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with a JSON value (``size=64``, ``classes=["a","b"]``), or a plain string such as a path."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_tta_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tta-scales`` and ``--tta-flip``: test-time augmentation of the Predictor (off by default)."""
    parser.add_argument(
        "--tta-scales",
        type=scales,
        default=(1.0,),
        metavar="S,S,...",
        help="test-time augmentation: predict at these scales (e.g. 0.75,1,1.25) and average the logits "
        "resized to the input (default 1: off)",
    )
    parser.add_argument(
        "--tta-flip", action="store_true", help="test-time augmentation: average with the mirrored image"
    )


def scales(text: str) -> tuple[float, ...]:
    """Comma-separated positive numbers."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated scales like 0.75,1,1.25, got {text!r}") from None
    if not values or any(not 0 < v <= 8 for v in values):
        raise argparse.ArgumentTypeError(f"scales must be in (0, 8], got {text!r}")
    return values


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """``--runtime`` and ``--dtype``: how a checkpoint or an ``.onnx`` export is run."""
    parser.add_argument(
        "--runtime",
        choices=("auto", "torch", "onnxruntime", "openvino"),
        default="auto",
        help="auto (default): a MobileNetV3 or ResNet checkpoint on the CPU in float32 runs compiled to "
        "OpenVINO fp32 (exported once, verified against torch, cached), any other in torch; "
        "torch: the checkpoint in torch, always; an .onnx export (fp32 or int8) runs on the CPU in "
        "openvino (the default when installed) or onnxruntime: pip install 'fcnseg[runtimes]'",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="bfloat16: torch autocast, or OpenVINO bf16 inference (changes numerics; default float32)",
    )
