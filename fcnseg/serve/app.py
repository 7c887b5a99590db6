"""The HTTP service: :func:`create_app` builds a FastAPI app around one checkpoint.

Endpoints:

- ``GET /health``: ``{"status": "ok", "model", "classes", "num_classes", "palette", "limits"}``.
- ``POST /segment`` (multipart field ``file``): the palette PNG of class ids
  (``image/png``, the same mask ``fcnseg predict`` writes); with ``?format=json``:
  class names, per-class pixel counts, the classes present, and the mask and an
  overlay as base64 PNGs; ``&confidence=true`` adds ``confidence``: ``mean_top1`` (the
  mean top-1 probability) and ``top1_png`` (base64 16-bit PNG, see :mod:`fcnseg.confidence_maps`).
- ``GET /``: a page to upload a photo and see the overlay with a legend.

Errors are JSON ``{"detail": message}``: 413 for an upload or image over the
limits, 415 for a file that is not an image, 422 for a truncated or corrupt one.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any, Literal

try:
    from fastapi import FastAPI, File, HTTPException, Query, UploadFile
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
except ImportError as error:  # the serve extra is optional
    raise ImportError(f"the web service needs the 'serve' extra: pip install 'fcnseg[serve]' ({error})") from None

import torch

from ..checkpoint import Checkpoint, load_checkpoint
from ..confidence_maps import png16_bytes
from ..predict import mask_to_image, overlay_image
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

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")

    def upload_message(self) -> str:
        return (
            f"upload too large: this service accepts image files up to {self.max_upload_bytes:,} bytes "
            f"({self.max_upload_bytes / 2**20:.1f} MiB); start the server with a larger --max-upload-mb to allow more"
        )


class _UploadSizeLimit:
    """ASGI middleware: a request body over the limit gets 413 before it is read in full.

    A declared ``Content-Length`` over the limit is refused at once; a body sent
    without one (chunked) is counted as it arrives and refused once it passes
    the limit. (FastAPI passes an ``HTTPException`` raised while reading the
    body through to its exception handler.)
    """

    def __init__(self, app: Any, max_body_bytes: int, message: str) -> None:
        self.app, self.max_body_bytes, self.message = app, max_body_bytes, message

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await JSONResponse({"detail": self.message}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise HTTPException(status_code=413, detail=self.message)
            return message

        await self.app(scope, counted_receive, send)


def _page() -> str:
    return resources.files("fcnseg.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(
    checkpoint: Checkpoint | str | os.PathLike[str],
    *,
    limits: ServeLimits | None = None,
    device: str | torch.device = "cpu",
    fast_paths: bool = True,
) -> FastAPI:
    """A FastAPI app that segments uploaded images with ``checkpoint`` (a path or a loaded one).

    ``app.state.segmenter`` is the :class:`~fcnseg.serve.segmenter.Segmenter`,
    ``app.state.limits`` the :class:`ServeLimits`. ``fast_paths=False`` runs the
    plain forward instead of the model's exact fast paths. Run it with uvicorn
    (``fcnseg serve`` does).
    """
    limits = limits or ServeLimits()
    if not isinstance(checkpoint, Checkpoint):
        from ..weights import resolve_checkpoint

        checkpoint = load_checkpoint(resolve_checkpoint(checkpoint))
    segmenter = Segmenter(
        checkpoint, device=device, memory_budget_bytes=limits.memory_budget_bytes, fast_paths=fast_paths
    )
    page = _page()

    app = FastAPI(
        title="fcnseg",
        description=f"Semantic segmentation with {segmenter.model_name} ({len(segmenter.classes)} classes)",
    )
    app.state.segmenter = segmenter
    app.state.limits = limits
    app.add_middleware(
        _UploadSizeLimit, max_body_bytes=limits.max_upload_bytes + _MULTIPART_SLACK, message=limits.upload_message()
    )

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness, and what the model predicts."""
        return {
            "status": "ok",
            "model": segmenter.model_name,
            "classes": segmenter.classes,
            "num_classes": len(segmenter.classes),
            "palette": [list(colour) for colour in segmenter.palette],
            "limits": asdict(limits),
        }

    def process(data: bytes, name: str, output_format: str, alpha: float, confidence: bool = False) -> Response:
        probe_image(data, name, limits.max_pixels)
        image = decode_image(data, name)
        start = time.perf_counter()
        confidence = confidence and output_format == "json"
        result = segmenter.segment(image, confidence=confidence)  # a Confidence (mask and maps) or the mask
        mask = result.mask if confidence else result
        seconds = time.perf_counter() - start  # includes waiting for earlier requests to leave the model
        mask_png = png_bytes(mask_to_image(mask, segmenter.palette))
        headers = {"X-Segment-Seconds": f"{seconds:.4f}"}
        if output_format == "png":
            return Response(mask_png, media_type="image/png", headers=headers)
        counts = segmenter.class_counts(mask)
        overlay_png = png_bytes(overlay_image(image, mask, segmenter.palette, alpha=alpha))
        body = {
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
        if confidence:
            body["confidence"] = {"mean_top1": float(result.top1.mean()),
                                  "top1_png": base64.b64encode(png16_bytes(result.top1)).decode("ascii")}
        return JSONResponse(body, headers=headers)

    @app.post("/segment", responses={413: {}, 415: {}, 422: {}})
    async def segment(
        file: UploadFile = File(..., description="the image to segment (JPEG, PNG, ...)"),
        output_format: Literal["png", "json"] = Query("png", alias="format", description="png: the mask; json: counts, mask and overlay"),
        alpha: float = Query(0.5, ge=0.0, le=1.0, description="overlay opacity of the class colours (json)"),
        confidence: bool = Query(False, description="json: add the mean top-1 probability and its map as a 16-bit PNG"),
    ) -> Response:
        """Segment one image: a palette PNG of class ids, or JSON with counts, mask and overlay."""
        data = await file.read()
        if len(data) > limits.max_upload_bytes:
            raise HTTPException(status_code=413, detail=limits.upload_message())
        name = os.path.basename(file.filename or "") or "upload"
        try:
            # Decoding, inference and encoding are CPU-bound: off the event loop.
            return await run_in_threadpool(process, data, name, output_format, alpha, confidence)
        except UploadError as error:
            raise HTTPException(status_code=error.status, detail=str(error)) from None

    return app
