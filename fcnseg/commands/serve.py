"""``fcnseg serve``: an HTTP service and a web page that segment uploaded images."""

from __future__ import annotations

import argparse
import os

from .arguments import add_runtime_arguments, add_tta_arguments
from .errors import CommandError, reports_errors

NAME = "serve"
HELP = "serve a checkpoint over HTTP: GET /health, POST /segment, and a web page at /"
API_KEY_VARIABLE = "FCNSEG_API_KEY"
EPILOG = f"""\
limits: an upload waits for one of --max-concurrent-uploads slots before its body is read
(503 with Retry-After after --queue-timeout s); its body must arrive within --body-timeout s
(408); a request head within --header-timeout s (else the connection is closed). Answers:
401 no/wrong API key, 408 body too slow, 413 too large, 415 not an image, 422 truncated or
corrupt, 503 busy. /health (never needs a key) says whether the server is ready and whether
a key is required.

API key: --api-key KEY or the environment variable {API_KEY_VARIABLE} (better: a command line
is visible to other users of the machine); clients send 'Authorization: Bearer KEY' or
'X-API-Key: KEY'. Without either, the service is open to anyone who can reach it.
"""

_SERVE_HINT = "needs the 'serve' extra: pip install 'fcnseg[serve]'"


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        NAME, help=HELP, description=HELP, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "checkpoint", help="an fcnseg checkpoint (.safetensors), a registry name, or an ONNX export (.onnx)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    parser.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted upload in MiB (default 10)")
    parser.add_argument(
        "--max-pixels", type=int, default=4_000_000, help="largest accepted image, width x height (default 4000000)"
    )
    parser.add_argument(
        "--memory-budget-mb",
        type=float,
        default=2048,
        help="forward passes needing more memory run in tiles, same mask (default 2048)",
    )
    parser.add_argument(
        "--max-concurrent-uploads",
        type=int,
        default=4,
        metavar="N",
        help="uploads read and processed at once; more wait for a slot before their body is read (default 4)",
    )
    parser.add_argument(
        "--queue-timeout",
        type=_seconds,
        default=30.0,
        metavar="S",
        help="seconds an upload may wait for a slot before it gets 503 with Retry-After (default 30)",
    )
    parser.add_argument(
        "--body-timeout",
        type=_seconds,
        default=60.0,
        metavar="S",
        help="seconds for a whole request body to arrive; slower or stalled uploads get 408 (default 60)",
    )
    parser.add_argument(
        "--header-timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="seconds for a request head to arrive, from the connection or the previous answer; "
        "the connection is closed beyond (default 10)",
    )
    parser.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help=f"require this key on every request but /health and the page (default: ${API_KEY_VARIABLE} if set)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a web origin whose pages may call the service, e.g. https://app.example.org "
        "(repeatable; '*' for any; default none: only pages served from this server)",
    )
    parser.add_argument(
        "--malloc-mmap-threshold-mib",
        type=float,
        default=1.0,
        metavar="MIB",
        help="glibc: allocations from this size on are mapped alone and returned to the system when "
        "freed, which keeps memory flat under images of many sizes (default 1; 0 keeps glibc's "
        "sliding threshold; MALLOC_MMAP_THRESHOLD_ in the environment wins)",
    )
    add_tta_arguments(parser)
    add_runtime_arguments(parser)
    parser.add_argument(
        "--no-fast-paths",
        action="store_true",
        help="run every layer as written instead of the model's exact fast paths (same masks)",
    )
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


@reports_errors(NAME)
def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..serve import ServeLimits, create_app
        from ..serve.server import set_mmap_threshold, uvicorn_options
    except ImportError as error:
        raise CommandError(f"{_SERVE_HINT} ({error})") from None

    set_mmap_threshold(int(args.malloc_mmap_threshold_mib * 2**20))  # before the model and the first request
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_VARIABLE)
    limits = ServeLimits(
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        max_pixels=args.max_pixels,
        memory_budget_bytes=int(args.memory_budget_mb * 2**20),
        max_concurrent_uploads=args.max_concurrent_uploads,
        queue_timeout_s=args.queue_timeout,
        body_timeout_s=args.body_timeout,
        header_timeout_s=args.header_timeout,
    )
    if api_key is not None and not api_key.strip():
        source = "--api-key" if args.api_key is not None else f"${API_KEY_VARIABLE}"
        raise CommandError(f"{source} is empty; give a non-empty key, or none to serve without one")
    app = create_app(
        args.checkpoint,
        limits=limits,
        device=args.device,
        fast_paths=not args.no_fast_paths,
        api_key=api_key,
        cors_origins=args.cors_origin,
        tta_scales=args.tta_scales,
        tta_flip=args.tta_flip,
        runtime=args.runtime,
        dtype=args.dtype,
    )
    access = "API key required" if api_key else "no API key"
    model = app.state.segmenter.model_name
    print(f"fcnseg serve: {model} on http://{args.host}:{args.port}/ ({access}; Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, **uvicorn_options(app))
    return 0
