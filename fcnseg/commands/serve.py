"""``fcnseg serve``: an HTTP service and a web page that segment uploaded images."""

from __future__ import annotations

import argparse
import sys

NAME = "serve"
HELP = "serve a checkpoint over HTTP: GET /health, POST /segment, and a web page at /"

_SERVE_HINT = "fcnseg serve needs the 'serve' extra: pip install 'fcnseg[serve]'"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(NAME, help=HELP, description=HELP)
    parser.add_argument("checkpoint", help="an fcnseg checkpoint (.safetensors)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted upload in MiB (default 10)")
    parser.add_argument("--max-pixels", type=int, default=4_000_000, help="largest accepted image, width x height (default 4000000)")
    parser.add_argument(
        "--memory-budget-mb",
        type=float,
        default=2048,
        help="forward passes needing more memory run in tiles, same mask (default 2048)",
    )
    parser.add_argument("--no-fast-paths", action="store_true",
                        help="run every layer as written instead of the model's exact fast paths (same masks)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..serve import ServeLimits, create_app
    except ImportError as error:
        print(f"{_SERVE_HINT} ({error})", file=sys.stderr)
        return 2
    from ..checkpoint import CheckpointError

    try:
        limits = ServeLimits(
            max_upload_bytes=int(args.max_upload_mb * 2**20),
            max_pixels=args.max_pixels,
            memory_budget_bytes=int(args.memory_budget_mb * 2**20),
        )
        app = create_app(args.checkpoint, limits=limits, device=args.device, fast_paths=not args.no_fast_paths)
    except (CheckpointError, ValueError) as error:
        print(f"fcnseg serve: error: {error}", file=sys.stderr)
        return 2
    print(f"fcnseg serve: {app.state.segmenter.model_name} on http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
