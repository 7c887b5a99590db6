"""Videos as inputs of ``fcnseg predict`` (decoded and encoded through PyAV: the ``video`` extra).

Frames are decoded in order and predicted ``batch_size`` at a time through :meth:`Predictor.masks` (tiled or augmented
frames one by one, as images are); each frame's mask is written as a palette PNG ``<stem>/<frame>.png`` (frame numbers
from 0, six digits), and with an overlay alpha the blended frames become ``<stem>_overlay.mp4`` (H.264, the source's
frame rate; odd sizes padded by one pixel, since 4:2:0 video needs even sizes). For the resume manifest a video is one
input: a run killed in the middle of a video predicts it again from its first frame.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..files import atomic_path
from ..inference.predictor import Predictor

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


class VideoError(ValueError):
    """A video that cannot be decoded or whose overlay cannot be encoded (one line naming the file)."""


def is_video(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named like a video file."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def predict_video(
    predictor: Predictor,
    path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    palette: Sequence[Sequence[int]],
    batch_size: int | Callable[[torch.Tensor], int] = 8,
    overlay_alpha: float | None = None,
    progress: Callable | None = None,
) -> list[Path]:
    """Write the masks of every frame of ``path`` (and its overlay video); returns the files written.

    ``batch_size``: frames per batch, or a function of a frame that gives it; ``progress`` wraps the frame
    iterator (e.g. a tqdm bar).
    """
    if importlib.util.find_spec("av") is None:
        raise VideoError(f"video {path}: reading videos needs PyAV (pip install 'fcnseg[video]')")
    import av

    from .images import overlay_image, save_mask_png

    path, folder = Path(path), Path(out) / Path(path).stem
    written: list[Path] = []
    target = Path(out) / f"{path.stem}_overlay.mp4"
    try:
        with av.open(str(path)) as container, contextlib.ExitStack() as stack:
            source = container.streams.video[0]
            source.thread_type = "AUTO"
            encoder: list = []  # (output container, stream), opened at the first frame (its size)

            def flush(frames: list[torch.Tensor]) -> None:
                masks = predictor.masks(torch.stack(frames)).to("cpu", predictor.mask_dtype)
                for image, mask in zip(frames, masks, strict=True):
                    written.append(save_mask_png(mask, palette, folder / f"{len(written):06d}.png"))
                    if overlay_alpha is not None:
                        _encode(
                            encoder,
                            stack,
                            target,
                            source,
                            np.asarray(overlay_image(image, mask, palette, overlay_alpha)),
                        )

            frames: list[torch.Tensor] = []
            decoded = container.decode(source)
            for frame in progress(decoded) if progress else decoded:
                image = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).contiguous()
                if frames and frames[0].shape != image.shape:
                    flush(frames)
                    frames = []
                frames.append(image)
                if len(frames) >= (batch_size(image) if callable(batch_size) else batch_size):
                    flush(frames)
                    frames = []
            if frames:
                flush(frames)
            if encoder:
                output, stream = encoder
                output.mux(stream.encode(None))  # drain the encoder before the file is closed and renamed
    except (av.error.FFmpegError, IndexError) as error:  # IndexError: no video stream
        raise VideoError(
            f"video {path} cannot be decoded, or its overlay encoded ({type(error).__name__}: {error})"
        ) from None
    if not written:
        raise VideoError(f"video {path} has no frames")
    return written + ([target] if overlay_alpha is not None else [])


def _encode(encoder: list, stack: contextlib.ExitStack, target: Path, source: Any, picture: np.ndarray) -> None:
    """Append one RGB frame (H, W, 3) to the overlay video, opening it (atomically) at the first frame."""
    import av

    if not encoder:
        output = stack.enter_context(av.open(str(stack.enter_context(atomic_path(target))), "w", format="mp4"))
        stream = output.add_stream("libx264", rate=Fraction(source.average_rate or 25))
        stream.width, stream.height = picture.shape[1] + picture.shape[1] % 2, picture.shape[0] + picture.shape[0] % 2
        stream.pix_fmt = "yuv420p"
        encoder += [output, stream]
    output, stream = encoder
    padded = np.pad(
        picture, ((0, stream.height - picture.shape[0]), (0, stream.width - picture.shape[1]), (0, 0)), mode="edge"
    )
    output.mux(stream.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")))
