"""Inference and training-step speed of fcnseg's FCN-8s against the seed code and torchvision.

All candidates run in one process on the same random input, in interleaved
rounds (warm-up excluded, median of the rounds), beside a 4096x4096 matmul
that gives the machine's attainable GEMM rate in the same run. Peak memory is
read per candidate in a fresh process on the CPU (RSS high-water mark) and
with ``torch.cuda.max_memory_allocated`` on a GPU.

Candidates (``--infer`` / ``--train`` choose them):

* ``seed``: ``../shared/reference/seed_fcn8s.py`` as written (NCHW, fp32);
  ``seed_channels_last``: the same in channels-last; ``seed_bf16``: under bf16 autocast.
* ``fcn8s_plain``: ``fcnseg.create_model("fcn8s", fast_paths=False)``: every layer as written.
* ``fcn8s``: ``fcnseg.create_model("fcn8s")``, the model with its exact fast paths, as
  prediction and training run it; ``fcn8s_bf16``: the same under bf16 autocast;
  ``fcn8s_compiled`` / ``fcn8s_plain_compiled``: ``torch.compile`` of either (inductor freezing).
* Training: the same names, one SGD step each (the engine trains ``fcn8s``).
* ``tv_fcn_resnet50``: ``torchvision.models.segmentation.fcn_resnet50(weights=None, weights_backbone=None)``.

Ratios in the JSON are time ratios (lower is better): ``fcn8s_infer_vs_seed`` =
time(fcn8s) / time(seed), per batch size (``_b2`` etc. for batch sizes other than 1).

    .venv/bin/python benchmarks/speed.py                 # full run (CPU: ~15 min quiet)
    .venv/bin/python benchmarks/speed.py --quick         # smoke run: small input, few repeats
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import torch
import torch.nn.functional as F
from harness import SEED_PATH, gib, median
from torch import nn

import fcnseg

NUM_CLASSES = 21
DEFAULT_INFER = {
    "cpu": ["seed", "seed_channels_last", "fcn8s_plain", "fcn8s", "fcn8s_bf16", "tv_fcn_resnet50"],
    "cuda": ["seed", "seed_bf16", "fcn8s_plain", "fcn8s_plain_bf16", "fcn8s", "fcn8s_bf16", "tv_fcn_resnet50"],
}
DEFAULT_TRAIN = {
    "cpu": ["seed", "fcn8s_plain", "fcn8s", "tv_fcn_resnet50"],
    "cuda": ["seed", "seed_bf16", "fcn8s_plain", "fcn8s", "fcn8s_bf16", "tv_fcn_resnet50"],
}
DEFAULT_BATCHES = {"cpu": [1, 2], "cuda": [1, 8]}


# --------------------------------------------------------------------------- models
def load_seed_module(path: Path = SEED_PATH) -> Any | None:
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location("seed_fcn8s", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def base_name(name: str) -> str:
    for suffix in ("_bf16", "_channels_last", "_compiled"):
        name = name.removesuffix(suffix)
    return name


def channels_last(name: str, mode: str) -> bool:
    """Whether a candidate's module and input are made channels-last here (fcnseg's fast paths do it themselves)."""
    return name.endswith("_channels_last")


def build_module(name: str, width: float, device: torch.device, mode: str = "infer") -> nn.Module:
    """The network behind a candidate, on ``device``, with the same random weights for one name."""
    torch.manual_seed(0)
    family = base_name(name)
    if family == "seed":
        seed = load_seed_module()
        if seed is None:
            raise FileNotFoundError(f"seed code not found at {SEED_PATH}")
        model = seed.FCN(n_class=NUM_CLASSES)
    elif family in ("fcn8s", "fcn8s_plain"):
        model = fcnseg.create_model("fcn8s", num_classes=NUM_CLASSES, width=width, fast_paths=family == "fcn8s")
        with torch.no_grad():  # non-zero score layers, so no path is skipped by a zero shortcut
            for layer in ("score_fr", "score_pool4", "score_pool3"):
                nn.init.normal_(getattr(model, layer).weight, std=1e-3)
    elif family == "tv_fcn_resnet50":
        from torchvision.models.segmentation import fcn_resnet50

        model = fcn_resnet50(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=False)
    else:
        raise ValueError(f"unknown candidate {name!r}")
    model = model.to(device)
    if channels_last(name, mode):
        model = model.to(memory_format=torch.channels_last)
    return model


def inference_callable(
    name: str, width: float, device: torch.device
) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict]:
    """``forward(x) -> logits`` for an inference candidate, and facts about it (e.g. compile time)."""
    facts: dict[str, Any] = {}
    model = build_module(name, width, device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    family = base_name(name)
    if name.endswith("_compiled"):
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True  # prepack weights, fuse conv + ReLU (inference only)
        forward = torch.compile(model, dynamic=False)
    elif name.endswith("_bf16"):

        def forward(x: torch.Tensor, model: nn.Module = model) -> torch.Tensor:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return model(x)

    else:
        forward = model
    if family == "tv_fcn_resnet50":
        tv = forward
        forward = lambda x: tv(x)["out"]  # noqa: E731
    return forward, facts


def train_step_callable(name: str, width: float, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One SGD step (forward, summed cross-entropy, backward, update) of a training candidate."""
    model = build_module(name, width, device, "train").train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=1e-10, momentum=0.99, weight_decay=5e-4)
    is_tv = base_name(name) == "tv_fcn_resnet50"
    bf16 = name.endswith("_bf16")

    def step(x: torch.Tensor, target: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(x)
            logits = out["out"] if is_tv else out
        loss = F.cross_entropy(logits.float(), target, ignore_index=255, reduction="sum")
        loss.backward()
        optimizer.step()

    return step


def make_input(batch: int, height: int, width: int, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, height, width, generator=generator).to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def make_target(batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(2)
    target = torch.randint(0, NUM_CLASSES, (batch, height, width), generator=generator)
    target[:, :4] = 255  # a void border, as in VOC
    return target.to(device)


# --------------------------------------------------------------------------- measuring
def memory_child(args: argparse.Namespace) -> int:
    """Child process: one candidate (``--child NAME``), one mode, one batch; print peak memory as JSON."""
    device = harness.resolve_device(args.device)
    height, width = args.size
    before = harness.current_rss_bytes()
    x = make_input(args.child_batch, height, width, device, channels_last(args.child, args.child_mode))
    if args.child_mode == "infer":
        forward, _ = inference_callable(args.child, args.width, device)
        run = lambda: forward(x)  # noqa: E731
        context = torch.inference_mode
    else:
        step = train_step_callable(args.child, args.width, device)
        target = make_target(args.child_batch, height, width, device)
        run = lambda: step(x, target)  # noqa: E731
        context = torch.enable_grad
    built = harness.current_rss_bytes()
    with context():
        run()  # first call: allocations (and a compile) happen here
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
    return harness.print_child_result(
        {"peak_rss": harness.peak_rss_bytes(), "rss_after_build": built, "rss_before_build": before, "seconds": seconds}
    )


def memory_of(name: str, mode: str, batch: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {}  # measured in-process (see measure_cuda_memory)
    child_args = ["--child-mode", mode, "--child-batch", str(batch), "--device", "cpu"]
    child_args += [
        "--size",
        f"{args.size[0]}x{args.size[1]}",
        "--width",
        str(args.width),
        "--threads",
        str(torch.get_num_threads()),
    ]
    result = harness.run_child(Path(__file__), name, child_args)
    if "error" in result:
        print(f"  memory probe {name}/{mode}/b{batch}: {result['error'][:300]}")
        return {"memory_error": result["error"][-500:]}
    return {"peak_rss_gib": gib(result["peak_rss"]), "rss_after_build_gib": gib(result["rss_after_build"])}


def measure_cuda_memory(run: Callable[[], Any], device: torch.device) -> dict[str, Any]:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return {"peak_cuda_allocated_gib": gib(torch.cuda.max_memory_allocated(device))}


def run_phase(
    mode: str, names: list[str], batch: int, args: argparse.Namespace, device: torch.device
) -> list[dict[str, Any]]:
    """Time every candidate of one mode at one batch size, interleaved with the reference matmul."""
    height, width = args.size
    print(f"\n[{mode}] batch {batch}, {height}x{width}, width {args.width}, {args.repeats} rounds")
    runs: dict[str, Callable[[], Any]] = {}
    facts: dict[str, dict[str, Any]] = {}
    context = torch.inference_mode if mode == "infer" else torch.enable_grad
    inputs: dict[bool, torch.Tensor] = {}
    target = make_target(batch, height, width, device)
    with context():
        for name in names:
            try:
                layout = channels_last(name, mode)
                x = inputs.setdefault(layout, make_input(batch, height, width, device, layout))
                start = time.perf_counter()
                if mode == "infer":
                    forward, facts[name] = inference_callable(name, args.width, device)
                    runs[name] = lambda forward=forward, x=x: forward(x)
                else:
                    step, facts[name] = train_step_callable(name, args.width, device), {}
                    runs[name] = lambda step=step, x=x: step(x, target)
                if name.endswith("_compiled"):  # the first call compiles: report it, keep it out of the timing
                    runs[name]()
                    harness.synchronize(device)
                    facts[name]["compile_and_first_call_s"] = round(time.perf_counter() - start, 2)
            except (FileNotFoundError, RuntimeError, ImportError) as error:
                print(f"  skipping {name}: {error}")
        runs[f"matmul_{args.matmul_size}"] = harness.matmul_operands(device, args.matmul_size)
        if device.type == "cuda":
            for name, run in runs.items():
                run()  # allocator warm
                facts.setdefault(name, {}).update(measure_cuda_memory(run, device))
        times = harness.interleaved_times(
            runs, repeats=args.repeats, warmup=args.warmup, device=device, number=args.number
        )
        flops = {}
        if not args.no_flops:
            for name, run in runs.items():
                if not name.startswith("matmul") and not name.endswith("_compiled"):
                    flops[name] = harness.count_flops(run)
    records = []
    for name, seconds in times.items():
        record: dict[str, Any] = {
            "candidate": name,
            "mode": mode,
            "batch": batch,
            "median_s": round(median(seconds), 4),
        }
        record["times_s"] = [round(t, 4) for t in seconds]
        if name.startswith("matmul"):
            record["gflops"] = round(harness.matmul_flops(args.matmul_size) / median(seconds) / 1e9, 1)
        else:
            record["images_per_s"] = round(batch / median(seconds), 3)
            if name in flops:
                record["gflop"] = round(flops[name] / 1e9, 1)
                record["gflops"] = round(flops[name] / median(seconds) / 1e9, 1)
        record.update(facts.get(name, {}))
        records.append(record)
    del runs
    return records


# --------------------------------------------------------------------------- report
def ratios_and_rates(records: list[dict[str, Any]], nominal_gflop: dict[str, float]) -> dict[str, Any]:
    """Time ratios (lower is better) and the fraction of the matmul rate reached."""
    by_key = {(r["candidate"], r["mode"], r["batch"]): r for r in records if "median_s" in r}
    summary: dict[str, Any] = {}
    for (name, mode, batch), record in by_key.items():
        if name.startswith("matmul"):
            continue
        suffix = "" if batch == 1 else f"_b{batch}"
        for baseline in ("seed", "seed_channels_last", "tv_fcn_resnet50", "fcn8s_plain"):
            other = by_key.get((baseline, mode, batch))
            if other is not None and baseline != name and name.startswith("fcn8s"):
                summary[f"{name}_{mode}_vs_{baseline}{suffix}"] = round(record["median_s"] / other["median_s"], 3)
        matmul = next(
            (r for (n, m, b), r in by_key.items() if n.startswith("matmul") and m == mode and b == batch), None
        )
        if matmul and "gflops" in record:
            record["fraction_of_matmul"] = round(record["gflops"] / matmul["gflops"], 3)
            nominal = nominal_gflop.get(mode)
            if nominal and name.startswith("fcn8s"):
                record["nominal_gflops"] = round(nominal * batch / record["median_s"], 1)
                record["nominal_fraction_of_matmul"] = round(record["nominal_gflops"] / matmul["gflops"], 3)
    for (name, mode, batch), record in by_key.items():
        single = by_key.get((name, mode, 1))
        if batch != 1 and single is not None and not name.startswith("matmul"):
            summary[f"{name}_{mode}_per_image_b{batch}_vs_b1"] = round(
                record["median_s"] / batch / single["median_s"], 3
            )
    return summary


def table(records: list[dict[str, Any]]) -> str:
    rows = []
    for r in records:
        if r["candidate"].startswith("matmul"):
            rows.append([r["candidate"], r["mode"], r["batch"], r["median_s"], "", "", "", r["gflops"], "1.00", ""])
            continue
        memory = r.get("peak_rss_gib", r.get("peak_cuda_allocated_gib", ""))
        rows.append(
            [
                r["candidate"], r["mode"], r["batch"], r.get("median_s", ""), r.get("images_per_s", ""),
                r.get("vs_seed", ""),
                r.get("gflop", ""), r.get("gflops", ""), r.get("fraction_of_matmul", ""), memory,
            ]
        )  # fmt: skip
    header = [
        "candidate",
        "mode",
        "batch",
        "median s",
        "img/s",
        "time vs seed",
        "GFLOP run",
        "GFLOP/s",
        "of matmul",
        "peak mem GiB",
    ]
    return harness.format_table(rows, header)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default: auto)")
    parser.add_argument(
        "--size", type=harness.parse_size, default=None, help="input N or HxW (default 500; --quick 192)"
    )
    parser.add_argument(
        "--width",
        type=float,
        default=1.0,
        help="fcnseg channel multiplier (1.0 = the paper's net; the seed is always 1.0)",
    )
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(b) for b in s.split(",")], default=None, help="default CPU 1,2; GPU 1,8"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; --quick 2)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed calls per candidate before the rounds (CPU 1, GPU 3)"
    )
    parser.add_argument(
        "--number", type=int, default=None, help="calls per candidate per round, averaged (CPU 1, GPU 10)"
    )
    parser.add_argument(
        "--infer", type=lambda s: s.split(","), default=None, help="inference candidates, comma-separated"
    )
    parser.add_argument(
        "--train", type=lambda s: [n for n in s.split(",") if n], default=None, help="training candidates ('' for none)"
    )
    parser.add_argument(
        "--train-batch-sizes",
        type=lambda s: [int(b) for b in s.split(",")],
        default=None,
        help="default CPU 1; GPU 1,8",
    )
    parser.add_argument(
        "--compile", action="store_true", help="add torch.compile candidates (compile time is reported)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the per-candidate peak-memory processes")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory processes, no timing")
    parser.add_argument("--no-flops", action="store_true", help="skip counting FLOPs (one extra call per candidate)")
    parser.add_argument("--matmul-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 192 px, batch 1, 2 rounds, no memory probes")
    parser.add_argument(
        "--json", type=Path, default=None, help="output (default benchmarks/results/speed_<device>[_quick].json)"
    )
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table as markdown here")
    harness.add_child_argument(parser)  # a candidate's name: its peak memory, measured in a fresh process
    parser.add_argument("--child-mode", choices=["infer", "train"], help=argparse.SUPPRESS)
    parser.add_argument("--child-batch", type=int, default=1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.size is None:
        args.size = (192, 192) if args.quick else (500, 500)
    if args.child:
        return memory_child(args)
    device = harness.resolve_device(args.device)
    kind = device.type
    args.repeats = args.repeats or (2 if args.quick else 5)
    batches = args.batch_sizes or ([1] if args.quick else DEFAULT_BATCHES[kind])
    train_batches = args.train_batch_sizes or ([1] if args.quick or kind == "cpu" else [1, 8])
    args.warmup = args.warmup if args.warmup is not None else (3 if kind == "cuda" else 1)
    args.number = args.number or (10 if kind == "cuda" else 1)
    if kind == "cuda":
        torch.backends.cudnn.benchmark = True  # the fastest cuDNN algorithms, for every candidate alike
    infer = args.infer or list(DEFAULT_INFER[kind])
    train = args.train if args.train is not None else list(DEFAULT_TRAIN[kind])
    if args.compile:
        infer += [n for n in ("fcn8s_plain_compiled", "fcn8s_compiled") if n not in infer]
    if load_seed_module() is None:
        print(f"note: seed code not found at {SEED_PATH}; seed candidates are skipped")
        infer = [n for n in infer if base_name(n) != "seed"]
        train = [n for n in train if base_name(n) != "seed"]
    if args.quick:
        args.no_memory = True
    if args.memory_only:
        args.no_flops, args.no_memory = True, False
    info = harness.machine_info(device)
    print(f"machine: {info['cpu']} ({info['usable_cpus']} usable CPUs, {info['torch_threads']} threads), "
          f"torch {info['torch']}, GPU: {info['gpu']}, load {info['load_average_start']}")  # fmt: skip

    # The faithful model's FLOPs: the "nominal" work every fcn8s candidate stands for.
    height, width = args.size
    nominal: dict[str, float] = {}
    if not args.no_flops:
        with torch.inference_mode():
            plain = build_module("fcn8s_plain", args.width, device).eval()
            nominal["infer"] = harness.count_flops(lambda: plain(make_input(1, height, width, device))) / 1e9
            del plain
        if train:
            step = train_step_callable("fcn8s_plain", args.width, device)
            x, target = make_input(1, height, width, device), make_target(1, height, width, device)
            nominal["train"] = harness.count_flops(lambda: step(x, target)) / 1e9
            del step
        print(f"fcn8s FLOPs at {height}x{width}: " + ", ".join(f"{m} {g:.1f} GFLOP" for m, g in nominal.items()))

    records: list[dict[str, Any]] = []
    if args.memory_only:  # no timing: one record per candidate for the memory probes below
        records = [{"candidate": n, "mode": "infer", "batch": batches[0]} for n in infer]
        records += [{"candidate": n, "mode": "train", "batch": train_batches[0]} for n in train]
    else:
        for batch in batches:
            records += run_phase("infer", infer, batch, args, device)
        for batch in train_batches:
            if train:
                records += run_phase("train", train, batch, args, device)
    if not args.no_memory and device.type == "cpu":
        print(f"\npeak memory, one fresh process per candidate (batch {batches[0]})")
        for record in records:
            if record["batch"] in (batches[0], train_batches[0]) and not record["candidate"].startswith("matmul"):
                record.update(memory_of(record["candidate"], record["mode"], record["batch"], args, device))
                print(f"  {record['candidate']}/{record['mode']}: {record.get('peak_rss_gib', '?')} GiB")
    summary = ratios_and_rates(records, nominal)
    for record in records:
        seed = next(
            (
                r
                for r in records
                if r["candidate"] == "seed" and r["mode"] == record["mode"] and r["batch"] == record["batch"]
            ),
            None,
        )
        if seed and "median_s" in seed and "median_s" in record and not record["candidate"].startswith("matmul"):
            record["vs_seed"] = round(record["median_s"] / seed["median_s"], 3)
    result = harness.results_document(
        "speed",
        info,
        config={
            "size": list(args.size),
            "width": args.width,
            "num_classes": NUM_CLASSES,
            "batch_sizes": batches,
            "train_batch_sizes": train_batches,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "calls_per_round": args.number,
            "dtype": "float32 (bf16 where named)",
            "quick": args.quick,
            "device": str(device),
        },  # fmt: skip
        nominal_gflop={m: round(g, 1) for m, g in nominal.items()},
        ratios=summary,
        results=records,
    )
    if device.type != "cuda":
        result["gpu"] = "no GPU available: GPU figures (fp32/bf16 images/s) not measured in this run"
    text = table(records)
    print("\n" + text)
    print("\n" + "\n".join(f"{k}: {v}" for k, v in summary.items() if "_vs_" in k))
    harness.write_json(args.json or harness.results_path(f"speed_{device.type}", args.quick), result)
    if args.markdown:
        harness.atomic_write_text(args.markdown, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
