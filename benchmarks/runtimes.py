"""CPU runtimes for fcnseg's FCN-8s: torch fast path, ONNX Runtime, OpenVINO (fp32, bf16, int8) vs the seed.

Speed (always): fcnseg's fcn8s (``--width``, default the paper's 1.0; random weights as in
speed.py) at ``--size`` (default 500x500), batch 1, and the seed FCN-8s
(``../shared/reference/seed_fcn8s.py``) in one process, in interleaved rounds (warm-up excluded,
medians); every figure is a time ratio within the run (to the seed, and to the torch fast path).
Candidates: ``seed``; ``torch_fast`` (the model with its exact fast paths, as predict runs it);
the fp32 ONNX export in ``onnxruntime_fp32``, ``openvino_fp32`` (dynamic H and W, as
fcnseg.inference.runtimes runs it), ``openvino_fp32_static`` (reshaped to the one input size) and
``openvino_bf16`` (INFERENCE_PRECISION_HINT bf16, changes numerics); and the int8 file of each
quantizer (``--quantizers``) in each runtime, e.g. ``int8_nncf_performance@openvino``. The speed
model's int8 files are calibrated on ``--speed-calibrate-images`` CamVid train images resized to
the input size (synthetic images without CamVid): its weights are random, so only its speed counts.

Agreement (with ``--checkpoint``, a trained model): each quantizer calibrated on the
``--calibrate`` split (``fcnseg.export.int8.export_int8``, every file kept to be measured), then on the
``--split`` split in every runtime: share of pixels whose class equals the fp32 torch model's
(pooled, and the worst image) and mean IU against the labels, fp32 and each runtime; fp32
runtimes and OpenVINO bf16 too.

    .venv/bin/python benchmarks/runtimes.py                       # speed at 500x500, width 1 (quiet machine)
    .venv/bin/python benchmarks/runtimes.py --quick               # smoke run: 256 px, 3 rounds, 2 quantizers
    .venv/bin/python benchmarks/runtimes.py --checkpoint runs/camvid/best.safetensors --data folder \\
        --root ../shared/data/camvid --calibrate train --split val --data-option 'resize=[180,240]'
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import speed
import torch
from harness import median

from fcnseg.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from fcnseg.commands.arguments import key_value  # noqa: E402
from fcnseg.evaluation.metrics import ConfusionMatrix  # noqa: E402
from fcnseg.export.int8 import CalibrationSet, QuantizationError, calibration_split, export_int8  # noqa: E402
from fcnseg.export.onnx import export_onnx  # noqa: E402
from fcnseg.inference.predictor import Predictor  # noqa: E402
from fcnseg.inference.runtimes import OnnxModel, installed_runtimes  # noqa: E402

ALL_QUANTIZERS = ["nncf:performance", "nncf:mixed", "onnxruntime:minmax", "onnxruntime:percentile"]
CAMVID = harness.CAMVID


def int8_files(
    checkpoint: Any,
    folder: Path,
    calibration: CalibrationSet,
    quantizers: list[str],
    exporter: str,
    control_agreement: float,
) -> dict[str, Path]:
    """One int8 file per ``quantizer:method``, each kept whatever its agreement (the benchmark measures it).

    ``nncf:METHOD:control`` is NNCF with accuracy control towards ``control_agreement`` on the calibration
    images (kept only if it gets there; the fp32 layers it needed are printed).
    """
    files = {}
    for spec in quantizers:
        quantizer, method, *control = spec.split(":")
        name = "_".join(["int8", quantizer, method, *control])
        path = folder / f"{name}.onnx"
        start = time.perf_counter()
        try:
            report = export_int8(
                checkpoint,
                path,
                calibration,
                quantizer=quantizer,
                method=method,
                min_agreement=control_agreement if control else 1e-9,
                accuracy_control=bool(control),
                exporter=exporter,
                check_shapes=[(1, 3, 37, 53)],
            )
        except QuantizationError as error:
            print(f"  {spec}: {error}")
            continue
        print(
            f"  {spec}: quantized and verified in {time.perf_counter() - start:.0f} s; "
            f"{report.fp32_layers[0]} of {report.fp32_layers[1]} layers with weights in fp32"
        )
        files[name] = path
    return files


def runtime_models(
    fp32: Path, int8: dict[str, Path], runtimes: list[str], static_size: tuple[int, int] | None
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """blob -> logits for every runtime candidate."""
    models: dict[str, Callable] = {}
    for runtime in runtimes:
        models[f"{runtime}_fp32"] = OnnxModel(fp32, runtime)
    if "openvino" in runtimes:
        models["openvino_bf16"] = OnnxModel(fp32, "openvino", dtype="bfloat16")
        if static_size is not None:
            import openvino as ov

            network = ov.Core().read_model(str(fp32))
            network.reshape({0: [1, 3, *static_size]})
            compiled = ov.Core().compile_model(
                network, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": torch.get_num_threads()}
            )
            models["openvino_fp32_static"] = lambda blob: torch.from_numpy(compiled(blob.numpy())[0])
    for name, path in int8.items():
        for runtime in runtimes:
            models[f"{name}@{runtime}"] = OnnxModel(path, runtime)
    return models


def measure_speed(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    height, width = args.size
    print(
        f"\n[speed] fcn8s width {args.width} vs the seed, {height}x{width}, batch 1, {args.repeats} rounds, "
        f"{torch.get_num_threads()} threads"
    )
    model = speed.build_module("fcn8s", args.width, torch.device("cpu")).eval()
    classes = [f"class{i}" for i in range(speed.NUM_CLASSES)]
    checkpoint_path = save_checkpoint(
        folder / "speed.safetensors", model, classes=classes, palette=[(i, i, i) for i in range(len(classes))]
    )
    checkpoint = load_checkpoint(checkpoint_path, fast_paths=False)
    start = time.perf_counter()
    export_onnx(checkpoint, folder / "speed_fp32.onnx", exporter=args.exporter, check_shapes=[(1, 3, 37, 53)])
    print(f"  fp32 export ({args.exporter}) verified in {time.perf_counter() - start:.0f} s")
    count = args.speed_calibrate_images
    if CAMVID.is_dir():
        calibration = calibration_split("folder", str(CAMVID), "train", count, resize=list(args.size))
    else:
        calibration = calibration_split("synthetic", None, "train", count, size=list(args.size), num_images=count)
    calibration.masks = None  # not the speed model's classes (random weights: only its speed counts)
    int8 = int8_files(checkpoint, folder, calibration, args.quantizers, args.exporter, args.control_agreement)
    runtimes = installed_runtimes()
    candidates: dict[str, Callable] = {
        "seed": speed.build_module("seed", 1.0, torch.device("cpu")).eval(),
        "torch_fast": speed.build_module("fcn8s", args.width, torch.device("cpu")).eval(),
    }
    candidates.update(runtime_models(folder / "speed_fp32.onnx", int8, runtimes, args.size))
    blob = speed.make_input(1, height, width, torch.device("cpu"))
    with torch.inference_mode():
        runs = {name: (lambda forward=forward: forward(blob)) for name, forward in candidates.items()}
        times = harness.interleaved_times(runs, repeats=args.repeats, warmup=1, device=torch.device("cpu"))
    medians = {name: median(seconds) for name, seconds in times.items()}
    return {
        "size": list(args.size),
        "width": args.width,
        "candidates": {
            name: {
                "median_s": round(medians[name], 4),
                "vs_seed": round(medians[name] / medians["seed"], 3),
                "vs_torch_fast": round(medians[name] / medians["torch_fast"], 3),
                "times_s": [round(t, 4) for t in times[name]],
            }
            for name in times
        },
        "calibration": {"images": len(calibration.images), "source": calibration.source},
    }


def measure_agreement(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Pixel agreement with fp32 torch and mean IU on ``--split``, for every runtime candidate of a trained
    checkpoint."""
    options, root = dict(args.data_option), args.root or None
    checkpoint = load_checkpoint(args.checkpoint, fast_paths=False)
    options.setdefault("ignore_index", checkpoint.ignore_index)
    calibration = calibration_split(args.data, root, args.calibrate, args.calibrate_images, **options)
    evaluation = calibration_split(args.data, root, args.split, args.limit, **options)
    print(
        f"\n[agreement] {args.checkpoint}: calibrated on {len(calibration.images)} images of {calibration.source}, "
        f"measured on {len(evaluation.images)} of {evaluation.source}"
    )
    export_onnx(checkpoint, folder / "fp32.onnx", exporter=args.exporter, check_shapes=[(1, 3, 37, 53)])
    int8 = int8_files(checkpoint, folder, calibration, args.quantizers, args.exporter, args.control_agreement)
    candidates = {
        "torch_fast": checkpoint.model,
        **runtime_models(folder / "fp32.onnx", int8, installed_runtimes(), None),
    }
    num_classes = len(checkpoint.classes)
    reference: list[torch.Tensor] = []
    results = {}
    for name, model in candidates.items():
        predictor = Predictor(model, fast_paths=True) if name == "torch_fast" else Predictor(model)
        matrix, same, total, worst = ConfusionMatrix(num_classes, checkpoint.ignore_index), 0, 0, 1.0
        start = time.perf_counter()
        for index, (image, label) in enumerate(zip(evaluation.images, evaluation.masks, strict=True)):
            mask = predictor.mask(image)
            if name == "torch_fast":
                reference.append(mask)
            agree = int((mask == reference[index]).sum())
            same, total, worst = same + agree, total + mask.numel(), min(worst, agree / mask.numel())
            matrix.update(mask.long(), label)
        mean_iu = float(matrix.compute()["mean_iu"])
        results[name] = {
            "pixel_agreement": round(same / total, 5),
            "worst_image": round(worst, 5),
            "mean_iu": round(mean_iu, 4),
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(f"  {name}: agreement {100 * same / total:.2f}% (worst {100 * worst:.2f}%), mean IU {mean_iu:.4f}")
    for record in results.values():
        record["mean_iu_change"] = round(record["mean_iu"] - results["torch_fast"]["mean_iu"], 4)
    return {
        "checkpoint": str(args.checkpoint),
        "calibration": calibration.source,
        "calibration_images": len(calibration.images),
        "evaluation": evaluation.source,
        "evaluation_images": len(evaluation.images),
        "options": options,
        "candidates": results,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 256 px, 3 rounds, nncf:performance and onnxruntime:minmax, 16 agreement images",
    )
    parser.add_argument(
        "--size", type=harness.parse_size, default=None, help="speed input N or HxW (default 500; --quick 256)"
    )
    parser.add_argument(
        "--width", type=float, default=1.0, help="fcnseg channel multiplier of the speed model (default 1.0)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; --quick 3)")
    parser.add_argument(
        "--quantizers",
        type=lambda s: s.split(","),
        default=None,
        help=f"quantizer:method list (default {','.join(ALL_QUANTIZERS)}; "
        "nncf:performance:control adds NNCF's accuracy control towards --control-agreement)",
    )
    parser.add_argument(
        "--exporter", default="torchscript", help="fp32 exporter (default torchscript: 7x faster to run)"
    )
    parser.add_argument(
        "--control-agreement",
        type=float,
        default=0.99,
        help="agreement on the calibration images that :control asks of NNCF (default 0.99)",
    )
    parser.add_argument("--speed-calibrate-images", type=int, default=None, help="default 8; --quick 2")
    parser.add_argument("--no-speed", action="store_true", help="only the agreement part")
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="a trained checkpoint: measure agreement and mean IU"
    )
    parser.add_argument("--data", default="folder", help="dataset kind of --calibrate and --split (default folder)")
    parser.add_argument("--root", default=str(CAMVID), help="dataset root (default ../shared/data/camvid)")
    parser.add_argument("--calibrate", default="train", help="calibration split (default train)")
    parser.add_argument(
        "--calibrate-images", type=int, default=64, help="calibration images, spread over the split (default 64)"
    )
    parser.add_argument("--split", default="val", help="split the agreement is measured on (default val)")
    parser.add_argument(
        "--limit", type=int, default=None, help="measure on N images of --split (default all; --quick 16)"
    )
    parser.add_argument(
        "--data-option",
        type=key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dataset option, e.g. resize=[180,240] (repeatable)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch and runtime threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="default benchmarks/results/runtimes_cpu[_quick].json")
    args = parser.parse_args(argv)
    args.size = args.size or ((256, 256) if args.quick else (500, 500))
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.quantizers = args.quantizers or (["nncf:performance", "onnxruntime:minmax"] if args.quick else ALL_QUANTIZERS)
    args.speed_calibrate_images = args.speed_calibrate_images or (2 if args.quick else 8)
    args.limit = args.limit or (16 if args.quick else None)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if speed.load_seed_module() is None and not args.no_speed:
        raise SystemExit(f"the seed FCN-8s is not at {harness.SEED_PATH}: the speed ratios need it (or --no-speed)")
    info = harness.machine_info(torch.device("cpu"))
    print(
        f"machine: {info['cpu']} ({info['usable_cpus']} CPUs, flags {' '.join(info['cpu_flags'])}), "
        f"load {info['load_average_start']}, runtimes: {', '.join(installed_runtimes())}"
    )
    result: dict[str, Any] = {"quick": args.quick, "exporter": args.exporter}
    with tempfile.TemporaryDirectory(prefix="fcnseg-runtimes-") as folder:
        if not args.no_speed:
            result["speed"] = measure_speed(args, Path(folder))
            rows = [
                [name, r["median_s"], r["vs_seed"], r["vs_torch_fast"]]
                for name, r in result["speed"]["candidates"].items()
            ]
            print(
                "\n" + harness.format_table(rows, ["candidate", "median s", "time vs seed", "time vs torch fast path"])
            )
        if args.checkpoint:
            result["agreement"] = measure_agreement(args, Path(folder))
            rows = [
                [
                    name,
                    f"{100 * r['pixel_agreement']:.2f}%",
                    f"{100 * r['worst_image']:.2f}%",
                    r["mean_iu"],
                    f"{r['mean_iu_change']:+.4f}",
                ]
                for name, r in result["agreement"]["candidates"].items()
            ]
            print("\n" + harness.format_table(rows, ["candidate", "pixels = fp32", "worst image", "mean IU", "change"]))
    document = harness.results_document("runtimes", info, **result)
    harness.write_json(args.json or harness.results_path("runtimes_cpu", args.quick), document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
