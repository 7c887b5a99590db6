"""Predict at the backend's speed: a checkpoint in the torch fast path against its OpenVINO fp32 compilation.

Two measurements, every claim a ratio within the run:

1. **Model alone** (in this process, ``--threads`` threads, default 1): each ``--models`` net (random
   weights, score layers drawn so the masks have structure, 11 classes) at ``--size`` (default
   360x480), batch 1, in interleaved rounds (medians): ``torch`` (the checkpoint with its exact fast
   paths, as ``fcnseg predict --runtime torch`` runs it) and ``openvino`` (the same checkpoint as
   ``--runtime auto`` compiles it: :mod:`fcnseg.inference.compiled`), and the share of pixels whose
   class agrees. Also the one-time cost: seconds to compile (export, parity in ONNX Runtime and
   OpenVINO, first compile) and to load from the cache.
2. **End to end** (the first model, fresh ``fcnseg predict`` processes, ``--threads`` threads,
   ``--workers`` decode processes): ``--images`` generated PNGs and ``--few`` of them, predicted with
   ``--runtime torch``, with the default ``auto`` (the compiled cache already made) and with the
   compiled ``.onnx`` file itself, the candidates side by side in each round; the marginal seconds per
   image are the difference of the two folders' times as the command reports them (its images over
   its images/s: start-up and loading left out) over the difference of the counts; start-up and
   loading are the process's wall time less that. The masks of torch and auto are compared pixel by pixel.

3. **int8** (``--int8``): the first model exported as NNCF int8 (calibrated on 8 generated images), alone in
   OpenVINO against its fp32 compilation, and end to end as ``fcnseg predict INT8.onnx``; the pipeline's
   cost is the int8 file's marginal time per image over the int8 model's own time
   (``int8_end_to_end_vs_model``: 1.0 means decoding, preprocessing, the arg-max and writing cost nothing
   beside the model). ``--checkpoint`` gives the first model trained weights (masks as a trained net draws
   them, which PNG compresses as it would in use).

The cache lives in a temporary ``$FCNSEG_HOME``, removed afterwards.

    .venv/bin/python benchmarks/predict_backend.py              # MobileNetV3 + VGG 0.25 + ResNet-18, 24 images
    .venv/bin/python benchmarks/predict_backend.py --quick      # smoke run: 192x256, 3 rounds, 6 images
    .venv/bin/python benchmarks/predict_backend.py --models fcn8s_mobilenet_v3_large --int8 --threads 2 --workers 1
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
import numpy as np
import torch
from harness import PROJECT_ROOT, median
from PIL import Image

import fcnseg  # noqa: E402
from fcnseg.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402

CLASSES = [f"class{i}" for i in range(11)]
PALETTE = [((37 * i) % 256, (91 * i) % 256, (53 * i) % 256) for i in range(11)]
MODELS = {"fcn8s_mobilenet_v3_large": {}, "fcn8s": {"width": 0.25}, "fcn8s_resnet18": {}}


def write_checkpoint(path: Path, name: str) -> Path:
    torch.manual_seed(0)
    model = fcnseg.create_model(name, num_classes=len(CLASSES), **MODELS.get(name, {}))
    with torch.no_grad():  # non-zero scores (the paper's init is zero): masks with structure
        for parameter_name, parameter in model.named_parameters():
            if parameter_name.startswith("score"):
                parameter.normal_(0, 0.01)
    return save_checkpoint(path, model, classes=CLASSES, palette=PALETTE)


def model_alone(checkpoint: Path, args: argparse.Namespace) -> dict[str, Any]:
    from fcnseg.inference import compiled

    start = time.perf_counter()
    loaded = compiled.load_compiled_checkpoint(checkpoint, device="cpu")
    first = time.perf_counter() - start
    start = time.perf_counter()
    loaded = compiled.load_compiled_checkpoint(checkpoint, device="cpu")
    cached = time.perf_counter() - start
    if loaded is None:
        return {"error": "not compiled (see the line above)"}
    torch_model = load_checkpoint(checkpoint).model.eval()
    height, width = args.size
    images = torch.from_numpy(harness.synthetic_image(height, width, np.random.default_rng(0))).permute(2, 0, 1)[None]
    blob = fcnseg.preprocess(images, torch_model.preprocessing)
    candidates = {"torch": lambda: torch_model(blob), "openvino": lambda: loaded.model(blob)}
    with torch.inference_mode():
        agreement = float((candidates["torch"]().argmax(1) == candidates["openvino"]().argmax(1)).float().mean())
        times = harness.interleaved_times(candidates, repeats=args.rounds, warmup=2, device=torch.device("cpu"))
    medians = {name: median(values) for name, values in times.items()}
    return {
        "torch_ms": round(1000 * medians["torch"], 1),
        "openvino_ms": round(1000 * medians["openvino"], 1),
        "openvino_vs_torch": round(medians["openvino"] / medians["torch"], 3),
        "mask_agreement": agreement,
        "compile_s": round(first, 2),
        "cached_load_s": round(cached, 2),
        "times": times,
    }


def int8_alone(checkpoint: Path, root: Path, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The checkpoint as an NNCF int8 file (calibrated on generated images), timed in OpenVINO against fp32."""
    from fcnseg.export.int8 import calibration_folder, export_int8
    from fcnseg.inference import compiled
    from fcnseg.inference.runtimes import OnnxModel

    folder = root / "calibration"
    folder.mkdir()
    height, width = args.size
    rng = np.random.default_rng(2)
    for number in range(8):
        Image.fromarray(harness.synthetic_image(height, width, rng)).save(folder / f"c{number}.png")
    path = root / "int8.onnx"
    # Random weights flip many near-tied pixels in int8; the agreement is reported, not required.
    report = export_int8(
        checkpoint, path, calibration_folder(folder, limit=8), runtimes=["openvino"], min_agreement=0.01
    )
    fp32 = compiled.load_compiled_checkpoint(checkpoint, device="cpu")
    assert fp32 is not None  # model_alone compiled it
    int8 = OnnxModel(path, "openvino")
    images = torch.from_numpy(harness.synthetic_image(height, width, np.random.default_rng(0))).permute(2, 0, 1)[None]
    blob = int8.prepare_input(images)
    candidates = {"openvino_fp32": lambda: fp32.model(blob), "openvino_int8": lambda: int8(blob)}
    with torch.inference_mode():
        times = harness.interleaved_times(candidates, repeats=args.rounds, warmup=2, device=torch.device("cpu"))
    medians = {name: median(values) for name, values in times.items()}
    return path, {
        "fp32_ms": round(1000 * medians["openvino_fp32"], 1),
        "int8_ms": round(1000 * medians["openvino_int8"], 1),
        "int8_vs_fp32": round(medians["openvino_int8"] / medians["openvino_fp32"], 3),
        "calibration_agreement": report.agreements[0].pixels,
        "times": times,
    }


def predict_seconds(
    model: str, folder: Path, out: Path, runtime: list[str], args: argparse.Namespace
) -> tuple[float, float]:
    """(wall seconds of the process, seconds the command reports for its images: start-up and loading left out)."""
    command = [
        sys.executable,
        "-m",
        "fcnseg",
        "predict",
        model,
        str(folder),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--workers",
        str(args.workers),
        *runtime,
    ]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr[-1500:]}")
    wall = time.perf_counter() - start
    images, rate = re.search(r"wrote (\d+) mask.*?([\d.]+) images/s", done.stdout).groups()
    return wall, int(images) / float(rate)


def end_to_end(
    checkpoint: Path, root: Path, args: argparse.Namespace, int8: tuple[Path, dict[str, Any]] | None = None
) -> dict[str, Any]:
    from fcnseg.inference import compiled

    rng = np.random.default_rng(1)
    folders = {count: root / f"in{count}" for count in (args.few, args.images)}
    for folder in folders.values():
        folder.mkdir()
    height, width = args.size
    for number in range(args.images):
        image = Image.fromarray(harness.synthetic_image(height, width, rng))
        for count, folder in folders.items():
            if number < count:
                image.save(folder / f"frame{number:04d}.png", compress_level=1)
    onnx_file = compiled.compiled_file(checkpoint)  # made by model_alone already: the cache is warm
    candidates = {
        "torch": (str(checkpoint), ["--runtime", "torch"]),
        "auto": (str(checkpoint), []),
        "onnx_export": (str(onnx_file), ["--runtime", "openvino"]),
    }
    if int8 is not None:
        candidates["int8_export"] = (str(int8[0]), ["--runtime", "openvino"])
    walls: dict[str, dict[int, list[float]]] = {name: {count: [] for count in folders} for name in candidates}
    pipeline: dict[str, dict[int, list[float]]] = {name: {count: [] for count in folders} for name in candidates}
    for round_index in range(args.e2e_rounds):
        for count, folder in folders.items():
            for name, (model, runtime) in candidates.items():  # the candidates side by side in time
                out = root / f"out_{name}_{count}_{round_index}"
                wall, seconds = predict_seconds(model, folder, out, runtime, args)
                walls[name][count].append(wall)
                pipeline[name][count].append(seconds)
        print(
            f"  round {round_index + 1}: " + ", ".join(f"{n} {w[args.images][-1]:.1f}s" for n, w in pipeline.items()),
            flush=True,
        )
    span = args.images - args.few
    marginal = {name: (median(w[args.images]) - median(w[args.few])) / span for name, w in pipeline.items()}
    startup = {name: median(walls[name][args.few]) - median(pipeline[name][args.few]) for name in candidates}

    def mask(name: str, number: int) -> np.ndarray:
        return np.asarray(Image.open(root / f"out_{name}_{args.images}_0" / f"frame{number:04d}.png"))

    masks = [(mask("torch", i), mask("auto", i)) for i in range(args.images)]
    equal = sum(int((a == b).sum()) for a, b in masks) / sum(a.size for a, _ in masks)
    int8_figures = {}
    if int8 is not None:  # the pipeline around the int8 model, as a multiple of the model's own time
        int8_figures = {"int8_end_to_end_vs_model": round(1000 * marginal["int8_export"] / int8[1]["int8_ms"], 3)}
    return {
        **int8_figures,
        "marginal_ms_per_image": {name: round(1000 * value, 1) for name, value in marginal.items()},
        "auto_vs_torch": round(marginal["auto"] / marginal["torch"], 3),
        "auto_vs_onnx_export": round(marginal["auto"] / marginal["onnx_export"], 3),
        "startup_and_load_s": {name: round(value, 2) for name, value in startup.items()},
        "mask_pixels_equal_torch_auto": equal,
        "pipeline_s": pipeline,
        "walls_s": walls,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS), help=",".join(MODELS))
    parser.add_argument("--size", type=harness.parse_size, default=(360, 480), help="HxW (default 360x480)")
    parser.add_argument("--threads", type=int, default=1, help="torch and runtime threads (default 1)")
    parser.add_argument("--rounds", type=int, default=9, help="model-alone rounds (default 9)")
    parser.add_argument("--images", type=int, default=24, help="end to end: the larger folder (default 24)")
    parser.add_argument("--few", type=int, default=4, help="end to end: the smaller folder (default 4)")
    parser.add_argument("--e2e-rounds", type=int, default=3, help="end-to-end rounds (default 3)")
    parser.add_argument("--workers", type=int, default=0, help="fcnseg predict --workers (default 0)")
    parser.add_argument("--no-e2e", action="store_true", help="the model-alone figures only")
    parser.add_argument(
        "--int8", action="store_true", help="also the first model as NNCF int8 in OpenVINO: alone and end to end"
    )
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="a trained checkpoint of the first model (default random weights)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 192x256, 3 rounds, 6 and 2 images")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per fcnseg predict run")
    parser.add_argument(
        "--json", type=Path, default=None, help="default benchmarks/results/predict_backend[_quick].json"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.rounds, args.images, args.few = (192, 256), 3, 6, 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    info = harness.machine_info(torch.device("cpu"))
    from fcnseg.inference import compiled

    compiled.COMPILED_FAMILIES = tuple(args.models)  # measure every model compiled, whatever auto picks for it
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["FCNSEG_HOME"] = str(root / "home")  # the children of end_to_end inherit it
        for name in args.models:
            print(f"{name}: model alone at {args.size[0]}x{args.size[1]}, {args.threads} thread(s)", flush=True)
            checkpoint = root / f"{name}.safetensors"
            if args.checkpoint is not None and name == args.models[0]:
                checkpoint.write_bytes(args.checkpoint.read_bytes())  # its own copy: the compiled cache keys on it
            else:
                write_checkpoint(checkpoint, name)
            results[name] = model_alone(checkpoint, args)
            print(f"  { ({k: v for k, v in results[name].items() if k != 'times'}) }", flush=True)
        int8 = None
        if args.int8:
            print(f"{args.models[0]}: int8 (NNCF) in OpenVINO against fp32", flush=True)
            int8 = int8_alone(root / f"{args.models[0]}.safetensors", root, args)
            results["int8"] = int8[1]
            print(f"  { ({k: v for k, v in int8[1].items() if k != 'times'}) }", flush=True)
        e2e = None
        if not args.no_e2e:
            print(f"end to end: {args.models[0]}, {args.images} and {args.few} images", flush=True)
            e2e = end_to_end(root / f"{args.models[0]}.safetensors", root, args, int8)
            print(f"  { ({k: v for k, v in e2e.items() if k not in ('walls_s', 'pipeline_s')}) }", flush=True)
    config = {
        "size": list(args.size),
        "threads": args.threads,
        "rounds": args.rounds,
        "images": args.images,
        "few": args.few,
        "workers": args.workers,
        "weights": str(args.checkpoint) if args.checkpoint else "random, score layers N(0, 0.01^2)",
    }
    document = harness.results_document("predict_backend", info, config=config, model_alone=results, end_to_end=e2e)
    harness.write_json(args.json or harness.results_path("predict_backend", args.quick), document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
