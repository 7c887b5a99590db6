"""Device resolution, in one place for every command and the library."""

from __future__ import annotations

import torch

#: Spellings accepted for the GPU besides ``cuda`` (``gpu`` is what people type).
_ALIASES = {"gpu": "cuda"}


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None (CUDA when present, else the CPU), ``cpu``, ``cuda``/``gpu`` or ``cuda:N``/``gpu:N``.

    Raises ``ValueError`` with one line when the device is unknown or not on this machine.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind, _, index = str(spec).strip().lower().partition(":")
    kind = _ALIASES.get(kind, kind)
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()):
        raise ValueError(f"unknown device {spec!r}: expected auto, cpu, cuda (or gpu) or cuda:N")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} asked for, but CUDA is not available on this machine (use --device cpu)")
        if index and int(index) >= torch.cuda.device_count():
            raise ValueError(
                f"device {spec!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return torch.device(f"{kind}:{index}" if index else kind)
