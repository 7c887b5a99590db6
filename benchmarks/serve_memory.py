"""Resident memory of ``fcnseg serve`` under a long mixed load: does it stay flat?

Starts the real service (``python -m fcnseg serve``, uvicorn on 127.0.0.1) with a
small FCN-8s checkpoint, sends ``--requests`` requests from ``--clients``
threads (images of many sizes, PNG and JPEG, mask and JSON answers, and some
refused uploads: not an image, truncated, over the pixel limit), reads the
server's ``VmRSS`` every ``--sample-every`` requests and fits a line to the
samples after ``--warmup`` requests: the slope, in MiB per 1,000 requests, is
the figure (0 = flat).

To tell a leak from allocator fragmentation, the server process also reports
glibc's own count of the bytes it has handed out and not had back
(``mallinfo2``: ``uordblks + hblkhd``) and Python's count of allocated blocks; at the end
the parent asks it to ``malloc_trim(0)`` and reads RSS again. RSS that grows
while the bytes in use stay flat, and falls back after the trim, is memory the
allocator holds free, not a leak.

Each candidate is a fresh server with its own extra options and environment
variables, so the candidates of one run meet the same load, e.g.

    .venv/bin/python benchmarks/serve_memory.py                     # the service as shipped
    .venv/bin/python benchmarks/serve_memory.py --candidate glibc-default:--malloc-mmap-threshold-mib=0 \
        --candidate arena2:--malloc-mmap-threshold-mib=0,MALLOC_ARENA_MAX=2 --candidate shipped:
    .venv/bin/python benchmarks/serve_memory.py --requests 400 --warmup 100 --quick   # smoke run

A candidate is ``NAME:ITEM,ITEM`` where an item is an ``fcnseg serve`` option
(``--x=y``) or an environment variable (``VAR=VALUE``); ``NAME:`` has neither.
Every request has a 120 s timeout; answers other than the expected status are counted.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import numpy as np
import torch
from harness import PROJECT_ROOT
from PIL import Image

import fcnseg
from fcnseg.checkpoint import save_checkpoint
from fcnseg.data.palette import default_palette

httpx = __import__("httpx")  # the test extra; a clear ImportError when absent


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes
    mime: str
    query: str
    expected: int


def _encode(picture: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format=fmt, **({"quality": 88} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def request_pool(seed: int, distinct: int, max_pixels: int) -> list[Upload]:
    """``distinct`` uploads of many sizes (16x16 to ``max_pixels``), plus refused ones, in the mix's proportions."""
    rng = np.random.default_rng(seed)
    pool: list[Upload] = []
    for index in range(distinct):
        pixels = float(np.exp(rng.uniform(np.log(256), np.log(max_pixels))))  # log-uniform: many small, some big
        aspect = rng.uniform(0.5, 2.0)
        height, width = max(16, int((pixels / aspect) ** 0.5)), max(16, int((pixels * aspect) ** 0.5))
        height, width = min(height, max_pixels // width), width
        fmt = "JPEG" if index % 3 else "PNG"
        query = "?format=json" if index % 4 == 0 else ""
        data = _encode(harness.synthetic_image(height, width, rng), fmt)
        pool.append(Upload(f"img{index}.{fmt.lower()}", data, f"image/{fmt.lower()}", query, 200))
    complete = _encode(harness.synthetic_image(300, 400, rng), "JPEG")
    pool.append(Upload("cut.jpg", complete[: len(complete) // 2], "image/jpeg", "", 422))
    pool.append(Upload("notes.txt", b"not an image\n" * 200, "text/plain", "", 415))
    too_wide = np.zeros((600, max_pixels // 600 + 100, 3), np.uint8)  # over the server's --max-pixels
    pool.append(Upload("wide.png", _encode(too_wide, "PNG"), "image/png", "", 413))
    return pool


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def server_child(stats_path: Path, serve_args: list[str]) -> int:
    """Run ``fcnseg serve`` in this process, writing allocator statistics to ``stats_path`` every second.

    SIGUSR1 makes it ``malloc_trim(0)`` (give every free page back) before the next statistics.
    """
    from fcnseg.cli import main as fcnseg_main

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    signal.signal(signal.SIGUSR1, lambda *_: libc.malloc_trim(0))

    def report() -> None:
        while True:
            info = libc.mallinfo2()
            stats = {
                "malloc_in_use_mib": (info.uordblks + info.hblkhd) / 2**20,
                "malloc_mapped_mib": info.hblkhd / 2**20,
                "malloc_heap_free_mib": info.fordblks / 2**20,
                "python_blocks_k": sys.getallocatedblocks() / 1000,
            }  # (gc.get_objects() from a thread is unsafe)
            harness.atomic_write_text(stats_path, json.dumps(stats))
            time.sleep(1.0)

    threading.Thread(target=report, daemon=True).start()
    return fcnseg_main(["serve", *serve_args])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def memory_sample(pid: int, stats_path: Path) -> dict[str, float]:
    """The server's RSS (all, and anonymous: not the mapped library files) and its last allocator statistics, in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    sample = {
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        "rss_anon_mib": int(fields["RssAnon"].split()[0]) / 1024,
    }
    with contextlib.suppress(OSError, ValueError):
        sample |= json.loads(stats_path.read_text())
    return {key: round(value, 1) for key, value in sample.items()}


def cpu_and_faults(pid: int) -> tuple[float, int]:
    """The server's CPU seconds (user + system) and minor page faults so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), int(fields[7])


def start_server(
    checkpoint: Path, port: int, env: dict[str, str], extra_args: list[str], stats_path: Path
) -> subprocess.Popen:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        harness.CHILD_FLAG,
        "server",
        str(stats_path),
        str(checkpoint),
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra_args,
    ]
    child_env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **env}
    server = subprocess.Popen(command, env=child_env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}: {' '.join(command)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not answer /health within 120 s")


def slope_per_1000(samples: list[dict[str, float]], warmup: int, key: str = "rss_mib") -> float:
    """Least-squares slope of ``key`` (MiB) against requests done, per 1,000 requests, after ``warmup``."""
    points = np.array(
        [(s["requests"], s[key]) for s in samples if s["requests"] >= warmup and key in s], dtype=np.float64
    )
    if len(points) < 2:
        return float("nan")
    return float(np.polyfit(points[:, 0], points[:, 1], 1)[0] * 1000)


def run_candidate(
    name: str, items: list[str], args: argparse.Namespace, checkpoint: Path, pool: list[Upload]
) -> dict[str, Any]:
    env = dict(item.split("=", 1) for item in items if not item.startswith("--"))
    options = [f"--max-pixels={args.max_pixels}"] + [item for item in items if item.startswith("--")] + args.server_args
    port = free_port()
    stats_path = checkpoint.with_name(f"stats-{name}.json")
    server = start_server(checkpoint, port, env, options, stats_path)
    order = random.Random(args.seed).choices(range(len(pool)), k=args.requests)
    time.sleep(1.5)  # one statistics report
    samples = [{"requests": 0, **memory_sample(server.pid, stats_path)}]
    cpu_start, faults_start = cpu_and_faults(server.pid)
    unexpected: list[str] = []
    done = 0
    lock = threading.Lock()
    start = time.perf_counter()
    local = threading.local()

    def send(index: int) -> None:
        nonlocal done
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
        upload = pool[index]
        response = local.client.post("/segment" + upload.query, files={"file": (upload.name, upload.data, upload.mime)})
        with lock:
            if response.status_code != upload.expected:
                unexpected.append(f"{upload.name}: {response.status_code} {response.text[:120]}")
            done += 1
            if done % args.sample_every == 0:
                samples.append({"requests": done, **memory_sample(server.pid, stats_path)})
                print(
                    f"  {name}: {done:5d} requests, {time.perf_counter() - start:6.1f} s, "
                    + ", ".join(f"{k} {v}" for k, v in samples[-1].items() if k != "requests"),
                    flush=True,
                )

    try:
        with ThreadPoolExecutor(args.clients) as clients:
            list(clients.map(send, order))
        seconds = time.perf_counter() - start
        cpu_end, faults_end = cpu_and_faults(server.pid)
        server.send_signal(signal.SIGUSR1)  # malloc_trim(0): what RSS is left is memory in use
        time.sleep(2.5)
        trimmed = memory_sample(server.pid, stats_path)
    finally:
        server.terminate()
        server.wait(30)
    after = [s for s in samples if s["requests"] >= args.warmup]
    return {
        "name": name,
        "server_options": options,
        "env": env,
        "seconds": round(seconds, 1),
        # CPU time and page faults count the server's own work: less disturbed by a busy machine than seconds.
        "server_cpu_ms_per_request": round(1000 * (cpu_end - cpu_start) / args.requests, 1),
        "minor_faults_per_request": round((faults_end - faults_start) / args.requests),
        "samples": samples,
        "slope_mib_per_1000": round(slope_per_1000(samples, args.warmup), 2),
        "slope_in_use_mib_per_1000": round(slope_per_1000(samples, args.warmup, "malloc_in_use_mib"), 2),
        "rss_start_mib": samples[0]["rss_mib"],
        "rss_at_warmup_mib": after[0]["rss_mib"] if after else None,
        "rss_end_mib": samples[-1]["rss_mib"],
        "rss_max_mib": max(s["rss_mib"] for s in samples),
        "after_malloc_trim": trimmed,
        "unexpected_answers": len(unexpected),
        "unexpected_examples": unexpected[:5],
    }


def parse_candidate(text: str) -> tuple[str, list[str]]:
    name, _, items = text.partition(":")
    return name or "shipped", [item for item in items.split(",") if item]


def main() -> None:
    if sys.argv[1:3] == [harness.CHILD_FLAG, "server"]:  # the rest of the line is fcnseg serve's, not ours
        sys.exit(server_child(Path(sys.argv[3]), sys.argv[4:]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--sample-every", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=500, help="requests before the slope is fitted")
    parser.add_argument("--clients", type=int, default=4, help="client threads sending at once")
    parser.add_argument("--distinct", type=int, default=60, help="distinct images in the mix")
    parser.add_argument("--width", type=float, default=0.0625, help="FCN-8s width of the checkpoint")
    parser.add_argument(
        "--max-pixels", type=int, default=1_000_000, help="largest image of the mix, and the server's limit"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="NAME:VAR=VALUE,...",
        help="a server to measure, with extra options and environment variables "
        "(repeatable; default: the service as shipped)",
    )
    parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[], help="extra fcnseg serve options (last)")
    parser.add_argument("--json", type=Path, default=harness.results_path("serve_memory"))
    parser.add_argument(
        "--quick", action="store_true", help="write *_quick.json (a smoke run never overwrites a real one)"
    )
    args = parser.parse_args()
    if args.quick:
        args.json = args.json.with_name(args.json.stem + "_quick.json")
    candidates = [parse_candidate(text) for text in args.candidate] or [("shipped", {})]

    machine = harness.machine_info(torch.device("cpu"))
    torch.manual_seed(0)
    model = fcnseg.create_model("fcn8s", num_classes=11, width=args.width).eval()
    pool = request_pool(args.seed, args.distinct, args.max_pixels)
    print(
        f"{len(pool)} distinct uploads, {sum(len(u.data) for u in pool) / 2**20:.1f} MiB in all; "
        f"{args.requests} requests per candidate from {args.clients} clients"
    )
    results = []
    with tempfile.TemporaryDirectory() as folder:
        classes = [f"c{i}" for i in range(11)]
        checkpoint = save_checkpoint(
            Path(folder) / "fcn8s.safetensors", model, classes=classes, palette=default_palette(11)
        )
        for name, items in candidates:
            print(f"candidate {name} {' '.join(items)}", flush=True)
            results.append(run_candidate(name, items, args, checkpoint, pool))
            result = results[-1]
            print(
                f"  {name}: slope after {args.warmup} requests {result['slope_mib_per_1000']:+.2f} MiB / 1,000 "
                "requests "
                f"(malloc in use {result['slope_in_use_mib_per_1000']:+.2f}), RSS {result['rss_at_warmup_mib']} -> "
                f"{result['rss_end_mib']} MiB (max {result['rss_max_mib']}, "
                f"after malloc_trim {result['after_malloc_trim']['rss_mib']}), "
                f"{result['unexpected_answers']} unexpected answers, {result['seconds']} s",
                flush=True,
            )
    print(
        harness.format_table(
            [
                [
                    r["name"],
                    " ".join(r["server_options"] + [f"{k}={v}" for k, v in r["env"].items()]),
                    r["slope_mib_per_1000"],
                    r["slope_in_use_mib_per_1000"],
                    r["rss_start_mib"],
                    r["rss_at_warmup_mib"],
                    r["rss_end_mib"],
                    r["rss_max_mib"],
                    r["after_malloc_trim"]["rss_mib"],
                    r["server_cpu_ms_per_request"],
                    r["minor_faults_per_request"],
                    r["unexpected_answers"],
                ]
                for r in results
            ],
            [
                "candidate",
                "options",
                "RSS slope MiB/1000 req",
                "in-use slope",
                "RSS start",
                "RSS at warm-up",
                "RSS end",
                "RSS max",
                "RSS after trim",
                "CPU ms/req",
                "faults/req",
                "unexpected",
            ],
        )
    )
    harness.write_json(
        args.json,
        harness.results_document(
            "serve_memory",
            machine,
            settings={k: v for k, v in vars(args).items() if k != "json"},
            candidates=results,
        ),
    )


if __name__ == "__main__":
    main()
