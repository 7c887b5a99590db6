"""The HTTP service: :func:`create_app` builds a FastAPI app around one checkpoint.

Endpoints:

- ``GET /health``:
  ``{"status": "ok", "ready", "model", "classes", "num_classes", "palette", "auth_required", "uploads", "limits"}``;
  ``ready`` is true once the model has segmented a warm-up image and while an upload slot is free. Needs no API key.
- ``POST /segment`` (multipart field ``file``): the palette PNG of class ids (``image/png``, the same mask
  ``fcnseg predict`` writes); with ``?format=json``: class names, per-class pixel counts, the classes present, and the
  mask and an overlay as base64 PNGs; ``&confidence=true`` adds ``confidence``: ``mean_top1`` (the mean top-1
  probability) and ``top1_png`` (base64 16-bit PNG, see :mod:`fcnseg.inference.confidence`).
- ``GET /``: a page to upload a photo and see the overlay with a legend.

Errors are JSON ``{"detail": message}``: 401 without the API key (when one is set), 408 for a body that does not arrive
within the body timeout, 413 for an upload or image over the limits, 415 for a file that is not an image, 422 for a
truncated or corrupt one, 503 (with ``Retry-After``) when every upload slot stayed busy for the queue timeout. The
guards are in :mod:`fcnseg.serve.guards`; the head timeout is the server's (:mod:`fcnseg.serve.server`).
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any, Literal

try:
    from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
except ImportError as error:  # the serve extra is optional
    raise ImportError(f"the web service needs the 'serve' extra: pip install 'fcnseg[serve]' ({error})") from None

import torch

from ..checkpoint import Checkpoint
from ..inference.confidence import png16_bytes
from ..inference.predictor import Confidence
from ..inference.runtimes import load_model_file
from ..predict.images import mask_to_image, overlay_image
from .guards import ApiKeyCheck, BodyDeadline, UploadQueue, UploadSizeLimit, UploadSlots
from .images import UploadError, decode_image, png_bytes, probe_image
from .segmenter import Segmenter

#: Room for the multipart envelope (boundaries, part headers, file name) around the file itself.
_MULTIPART_SLACK = 64 * 1024


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask of the server."""

    #: Largest accepted upload, in bytes (413 beyond).
    max_upload_bytes: int = 10 * 2**20
    #: Largest accepted image, width x height (413 beyond; checked from the header, before decoding).
    max_pixels: int = 4_000_000
    #: Forward passes that would need more memory are run in tiles (same mask, bounded memory).
    memory_budget_bytes: int = 2 * 2**30
    #: Uploads read and processed at once; more wait for a slot before their body is read.
    max_concurrent_uploads: int = 4
    #: Seconds an upload may wait for a slot before it gets 503 with Retry-After.
    queue_timeout_s: float = 30.0
    #: Seconds for the whole request body to arrive, from its first read (408 beyond).
    body_timeout_s: float = 60.0
    #: Seconds for a request head (request line and headers) to arrive (the server closes the connection beyond).
    header_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value > 0:  # also refuses NaN
                raise ValueError(f"{name} must be positive, got {value}")

    def upload_message(self) -> str:
        return (
            f"upload too large: this service accepts image files up to {self.max_upload_bytes:,} bytes "
            f"({self.max_upload_bytes / 2**20:.1f} MiB); start the server with a larger --max-upload-mb to allow more"
        )


def _page() -> str:
    return resources.files("fcnseg.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(
    checkpoint: Checkpoint | str | os.PathLike[str],
    *,
    limits: ServeLimits | None = None,
    device: str | torch.device = "cpu",
    fast_paths: bool = True,
    api_key: str | None = None,
    cors_origins: Sequence[str] = (),
    runtime: str | None = None,
    dtype: str = "float32",
    **predictor_options: Any,
) -> FastAPI:
    """A FastAPI app that segments uploaded images with ``checkpoint`` (a path or a loaded one).

    ``app.state.segmenter`` is the :class:`~fcnseg.serve.segmenter.Segmenter`, ``app.state.limits`` the
    :class:`ServeLimits`, ``app.state.uploads`` the :class:`~fcnseg.serve.guards.UploadQueue`. ``fast_paths=False`` runs
    the plain forward instead of the model's exact fast paths. With ``api_key``, every path but ``/health`` and the page
    needs it. ``cors_origins`` are the web origins whose pages may call the service (``"*"``: any). Run it with uvicorn
    and :func:`fcnseg.serve.server.uvicorn_options` (``fcnseg serve`` does).
    """
    if api_key is not None and not api_key.strip():
        raise ValueError("the API key is empty; give a non-empty key, or none to serve without one")
    limits = limits or ServeLimits()
    if not isinstance(checkpoint, Checkpoint):  # a file, a registry name, or an ONNX export run in a runtime
        checkpoint, dtype = load_model_file(checkpoint, runtime, dtype=dtype, device=device, fast_paths=fast_paths)
    segmenter = Segmenter(
        checkpoint,
        device=device,
        memory_budget_bytes=limits.memory_budget_bytes,
        fast_paths=fast_paths,
        dtype=dtype,
        **predictor_options,
    )  # e.g. tta_scales, tta_flip
    segmenter.segment(torch.zeros((3, 32, 32), dtype=torch.uint8))  # warm-up: the model runs on this device

    app = FastAPI(
        title="fcnseg",
        description=f"Semantic segmentation with {segmenter.model_name} ({len(segmenter.classes)} classes)",
    )
    # What the endpoints below read, per request, from ``request.app.state``.
    app.state.segmenter = segmenter
    app.state.limits = limits
    app.state.uploads = UploadQueue(limits.max_concurrent_uploads, limits.queue_timeout_s)
    app.state.auth_required = api_key is not None
    app.state.page = _page()
    _add_guards(app, api_key, cors_origins)
    _add_endpoints(app)
    return app


def _add_guards(app: FastAPI, api_key: str | None, cors_origins: Sequence[str]) -> None:
    """The middleware around the endpoints (:mod:`fcnseg.serve.guards`), outermost added last.

    CORS answers preflights and labels every answer, the key is checked before anything is
    read, then the size, a slot, and the body's deadline.
    """
    limits = app.state.limits
    app.add_middleware(BodyDeadline, timeout=limits.body_timeout_s)
    app.add_middleware(UploadSlots, queue=app.state.uploads)
    app.add_middleware(
        UploadSizeLimit, max_body_bytes=limits.max_upload_bytes + _MULTIPART_SLACK, message=limits.upload_message()
    )
    if api_key is not None:
        app.add_middleware(ApiKeyCheck, key=api_key, open_paths=frozenset({"/", "/health"}))
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key"],
            expose_headers=["X-Segment-Seconds", "Retry-After"],
        )


def _add_endpoints(app: FastAPI) -> None:
    """The routes: the page, ``/health`` and ``/segment``; each reads the service from ``request.app.state``."""
    app.get("/", response_class=HTMLResponse, include_in_schema=False)(index)
    app.get("/health")(health)
    app.post("/segment", responses={401: {}, 408: {}, 413: {}, 415: {}, 422: {}, 503: {}})(segment)


def index(request: Request) -> HTMLResponse:
    return HTMLResponse(request.app.state.page)


def health(request: Request) -> dict[str, Any]:
    """Liveness, readiness (model warmed up, an upload slot free), and what the model predicts."""
    state = request.app.state
    segmenter, uploads = state.segmenter, state.uploads
    return {
        "status": "ok",
        "ready": uploads.in_progress < uploads.slots,
        "model": segmenter.model_name,
        "classes": segmenter.classes,
        "num_classes": len(segmenter.classes),
        "palette": [list(colour) for colour in segmenter.palette],
        "auth_required": state.auth_required,
        "uploads": {"in_progress": uploads.in_progress, "waiting": uploads.waiting, "slots": uploads.slots},
        "limits": asdict(state.limits),
    }


async def segment(
    request: Request,
    file: UploadFile = File(..., description="the image to segment (JPEG, PNG, ...)"),
    output_format: Literal["png", "json"] = Query(
        "png", alias="format", description="png: the mask; json: counts, mask and overlay"
    ),
    alpha: float = Query(0.5, ge=0.0, le=1.0, description="overlay opacity of the class colours (json)"),
    confidence: bool = Query(False, description="json: add the mean top-1 probability and its map as a 16-bit PNG"),
) -> Response:
    """Segment one image: a palette PNG of class ids, or JSON with counts, mask and overlay."""
    limits: ServeLimits = request.app.state.limits
    data = await file.read()
    if len(data) > limits.max_upload_bytes:
        raise HTTPException(status_code=413, detail=limits.upload_message())
    name = os.path.basename(file.filename or "") or "upload"
    try:
        # Decoding, inference and encoding are CPU-bound: off the event loop.
        return await run_in_threadpool(_segment_upload, request.app.state, data, name, output_format, alpha, confidence)
    except UploadError as error:
        raise HTTPException(status_code=error.status, detail=str(error)) from None


def _segment_upload(state: Any, data: bytes, name: str, output_format: str, alpha: float, confidence: bool) -> Response:
    """The answer of ``POST /segment`` to an upload of ``data``; :class:`UploadError` for one that is not a usable
    image."""
    segmenter: Segmenter = state.segmenter
    probe_image(data, name, state.limits.max_pixels)
    image = decode_image(data, name)
    start = time.perf_counter()
    confidence = confidence and output_format == "json"
    result = segmenter.segment(image, confidence=confidence)  # a Confidence (mask and maps) or the mask
    mask = result.mask if isinstance(result, Confidence) else result
    seconds = time.perf_counter() - start  # includes waiting for earlier requests to leave the model
    mask_png = png_bytes(mask_to_image(mask, segmenter.palette))
    headers = {"X-Segment-Seconds": f"{seconds:.4f}"}
    if output_format == "png":
        return Response(mask_png, media_type="image/png", headers=headers)
    body = _json_body(segmenter, image, mask, mask_png, name, alpha, seconds)
    if isinstance(result, Confidence):  # asked for (confidence) and JSON
        body["confidence"] = {
            "mean_top1": float(result.top1.mean()),
            "top1_png": base64.b64encode(png16_bytes(result.top1)).decode("ascii"),
        }
    return JSONResponse(body, headers=headers)


def _json_body(
    segmenter: Segmenter,
    image: torch.Tensor,
    mask: torch.Tensor,
    mask_png: bytes,
    name: str,
    alpha: float,
    seconds: float,
) -> dict[str, Any]:
    """``?format=json``: class names, per-class pixel counts, the classes present, the mask and an overlay."""
    counts = segmenter.class_counts(mask)
    overlay_png = png_bytes(overlay_image(image, mask, segmenter.palette, alpha=alpha))
    return {
        "model": segmenter.model_name,
        "file": name,
        "width": int(image.shape[-1]),
        "height": int(image.shape[-2]),
        "classes": segmenter.classes,
        "pixel_counts": {count.name: count.pixels for count in counts},
        "present": [c.to_dict() for c in sorted(counts, key=lambda c: -c.pixels) if c.pixels > 0],
        "mask_png": base64.b64encode(mask_png).decode("ascii"),
        "overlay_png": base64.b64encode(overlay_png).decode("ascii"),
        "segment_seconds": seconds,
    }
