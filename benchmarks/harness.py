"""What every benchmark here shares: interleaved timing, machine facts, FLOPs, peak memory, the results file.

Timings on a shared machine drift with the load, so candidates are timed in
rounds (one call of each per round, in turn) and summarised by their median;
every figure that matters is a ratio between candidates of the same run.

Also one way of each of: the results file's envelope (:func:`results_document`:
benchmark, command, machine with the load at the start and end), the fresh child
process a benchmark measures one candidate in (:data:`CHILD_FLAG`, :func:`run_child`),
an image size on the command line (:func:`parse_size`) and a synthetic photo-like
image (:func:`synthetic_image`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:  # run as `python benchmarks/x.py` from a checkout
    sys.path.insert(0, str(PROJECT_ROOT))

from fcnseg.files import atomic_path, atomic_write_text  # noqa: E402,F401 (re-exported for the benchmarks)

#: ../shared beside the checkout; FCNSEG_SHARED points elsewhere (e.g. from a git worktree).
SHARED = Path(os.environ.get("FCNSEG_SHARED", PROJECT_ROOT.parent / "shared"))
SEED_PATH = SHARED / "reference" / "seed_fcn8s.py"
CAMVID = SHARED / "data" / "camvid"
RESULTS = PROJECT_ROOT / "benchmarks" / "results"
#: The hidden option that makes a benchmark script the fresh child process measuring one thing:
#: ``script --child KIND ...`` prints one JSON line (:func:`print_child_result`), read by :func:`run_child`.
CHILD_FLAG = "--child"


def resolve_device(name: str) -> torch.device:
    """The package's one device resolution; a missing CUDA ends the benchmark with its one-line message."""
    from fcnseg.device import resolve_device as resolve

    try:
        return resolve(name)
    except ValueError as error:
        raise SystemExit(str(error)) from None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The CPU features that decide the fp32/bf16 kernels (AVX2/AVX512/AMX/BF16)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "fma")
                return sorted(flag for flag in line.split(":", 1)[1].split() if flag in wanted)
    except OSError:
        pass
    return []


def machine_info(device: torch.device) -> dict[str, Any]:
    """Machine, versions and load: enough to tell two runs apart."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "load_average_start": list(os.getloadavg()),
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(device if device.type == "cuda" else 0)
        info["cuda"] = torch.version.cuda
    else:
        info["gpu"] = "no GPU available"
    return info


def interleaved_times(
    candidates: Mapping[str, Callable[[], Any]],
    *,
    repeats: int,
    warmup: int,
    device: torch.device,
    number: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, list[float]]:
    """Seconds per call of each candidate: ``warmup`` untimed calls each, then ``repeats`` rounds in turn.

    Each round times ``number`` consecutive calls of a candidate and records their mean
    (on a GPU, single calls are too short to time alone).
    """
    for name, run in candidates.items():
        for _ in range(warmup):
            run()
        synchronize(device)
        log(f"  warmed up {name}")
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for round_index in range(repeats):
        for name, run in candidates.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(number):
                run()
            synchronize(device)
            times[name].append((time.perf_counter() - start) / number)
        log(f"  round {round_index + 1}/{repeats}: " + ", ".join(f"{n} {t[-1]:.3f}s" for n, t in times.items()))
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def matmul_operands(device: torch.device, size: int = 4096, dtype: torch.dtype = torch.float32) -> Callable[[], Any]:
    """A ``size`` x ``size`` matmul to time beside the models: the machine's attainable GEMM rate."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    return lambda: torch.mm(a, b)


def matmul_flops(size: int = 4096) -> int:
    return 2 * size**3


def count_flops(run: Callable[[], Any]) -> int:
    """FLOPs of one call (2 per multiply-add) as counted by ``torch.utils.flop_counter``."""
    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return int(counter.get_total_flops())


def _proc_status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """High-water resident memory of this process.

    ``VmHWM`` from /proc (Linux): it starts afresh at ``exec``, unlike ``ru_maxrss``, which a
    child started by ``subprocess`` inherits from the parent it was forked from.
    """
    peak = _proc_status_bytes("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    return _proc_status_bytes("VmRSS") or 0


def add_child_argument(parser: argparse.ArgumentParser, choices: Any = None) -> None:
    """The hidden ``--child KIND`` of a benchmark that runs itself as a child process."""
    parser.add_argument(CHILD_FLAG, choices=choices, metavar="KIND", help=argparse.SUPPRESS)


def run_child(
    script: Path, kind: str, args: list[str], timeout: float | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run ``script --child KIND args`` in a fresh Python process; its last stdout line is a JSON object.

    A fresh process is the only clean way to read one candidate's peak RSS on the CPU.
    ``env`` adds environment variables for the child. A failed child gives ``{"error": ...}``.
    """
    command = [sys.executable, str(script), CHILD_FLAG, kind, *args]
    child_env = {**os.environ, **(env or {})}
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=PROJECT_ROOT, env=child_env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout)[-2000:]
        return {"error": f"child {' '.join([kind, *args])} failed (exit {done.returncode}): {tail}"}
    return json.loads(lines[-1])


def print_child_result(result: Mapping[str, Any]) -> int:
    """A child process's answer: one JSON line on stdout (the last one is what :func:`run_child` reads); 0."""
    print(json.dumps(result), flush=True)
    return 0


# --------------------------------------------------------------------------- the results file
def command_line() -> str:
    """How this benchmark was started, as its results file records it (``python benchmarks/x.py --quick``)."""
    return " ".join([Path(sys.executable).name, *sys.argv])


def results_document(benchmark: str, machine: Mapping[str, Any], **body: Any) -> dict[str, Any]:
    """The envelope every results file shares, then ``body``: the benchmark's name, the command that ran it,
    and the machine (:func:`machine_info` from the start) with the load average now, at the end."""
    machine = {**machine, "load_average_end": list(os.getloadavg())}
    return {"benchmark": benchmark, "command": command_line(), "machine": machine, **body}


def results_path(name: str, quick: bool = False) -> Path:
    """The default results file ``benchmarks/results/<name>[_quick].json``: a smoke run never overwrites a real one."""
    return RESULTS / f"{name}{'_quick' if quick else ''}.json"


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
    print(f"wrote {path}")


# --------------------------------------------------------------------------- inputs
def parse_size(text: str) -> tuple[int, int]:
    """An image size on the command line: ``N`` (N x N) or ``HxW``, positive; (height, width)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be N or HxW, got {text!r}") from None
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"size must be N or HxW with positive sides, got {text!r}")
    return (values[0], values[-1])


def synthetic_image(
    height: int, width: int, rng: np.random.Generator, *, blob: int = 60, noise: float = 0.2
) -> np.ndarray:
    """A uint8 (H, W, 3) picture with structure at several scales: smooth colour blobs about ``blob`` pixels
    across plus uniform noise of weight ``noise``. It compresses like a photo (not like noise or a flat image),
    and a segmentation net's mask of it has many regions."""
    coarse = torch.from_numpy(rng.random((1, 3, max(2, height // blob), max(2, width // blob)), dtype=np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]
    grain = torch.from_numpy(rng.random((3, height, width), dtype=np.float32)) * noise
    return ((smooth * (1 - noise) + grain) * 255).clamp(0, 255).byte().permute(1, 2, 0).numpy()


def gib(n_bytes: float) -> float:
    return round(n_bytes / 2**30, 3)


def format_table(rows: list[list[Any]], header: list[str]) -> str:
    """A GitHub-markdown table (prints well in a terminal too)."""
    cells = [[str(c) for c in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
