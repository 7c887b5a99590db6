"""The training state beside the checkpoints: everything a killed run needs to go on exactly.

``train_state.pt`` holds the model weights, the optimiser state, the step, the training seconds so far (for runs trained
to the clock), the best mean IU so far and the RNG states of torch, numpy and Python (one set per process). The data
order needs no state of its own: it is a pure function of (seed, step) (see :mod:`fcnseg.engine.sampling`). The file is
written atomically and read with ``torch.load(weights_only=True)``: only tensors and plain containers, never pickled
code.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..files import atomic_path
from ..weights.checks import WeightsError, load_without_code

STATE_FILE = "train_state.pt"
STATE_VERSION = 1


class TrainStateError(ValueError):
    """A training state file that cannot be resumed from."""


def capture_rng_state() -> dict[str, Any]:
    """This process's RNG states, as tensors and plain values."""
    legacy_state = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())  # the legacy tuple
    mt_name, keys, position, has_gauss, cached_gauss = legacy_state
    python_version, python_internal, python_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gauss),
        },
        "python": {"version": python_version, "internal": list(python_internal), "gauss": python_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"]), python_state["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_state(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` (see the module docstring) atomically; tensors are moved to the CPU."""
    payload = {"version": STATE_VERSION, **_to_cpu(state)}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_train_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state written by :func:`save_train_state` (no pickled code is ever run)."""
    path = Path(path)
    if not path.is_file():
        raise TrainStateError(f"{path}: no training state to resume from (a run directory holds {STATE_FILE})")
    try:
        state = load_without_code(path, "training state")
    except WeightsError as error:
        raise TrainStateError(str(error)) from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise TrainStateError(f"{path}: not an fcnseg training state (version {STATE_VERSION} expected)")
    return state


def _to_cpu(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.detach().to("cpu")
    if isinstance(value, dict):
        return {key: _to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(item) for item in value)
    return value
