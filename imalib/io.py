"""Atomic file writes and safe checkpoint loading."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from imalib.errors import CheckpointError


def _atomic(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it: never half a file."""
    text = json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n"
    _atomic(Path(path), lambda stream: stream.write(text.encode()))


def save_torch(path: Path, obj: Any) -> None:
    """torch.save through a temporary file and a rename."""
    _atomic(Path(path), lambda stream: torch.save(obj, stream))


def load_torch(path: Path) -> Any:
    """Load tensors and plain containers only (``weights_only=True``): nothing is unpickled."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same advice
        raise CheckpointError(
            f"{path} is corrupted or not a weights-only checkpoint ({type(error).__name__}); "
            f"delete it to start that run again"
        ) from None


def load_state(model: torch.nn.Module, state: Any, source: Path) -> None:
    """Load a state dict into ``model``, or say plainly that it belongs to another model."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(
            f"{source} holds weights of another model ({first}); check the dataset, or delete the file to train again"
        ) from None
