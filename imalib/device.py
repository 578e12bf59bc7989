"""Which device a run uses, the numerics flags it runs under, and how they are recorded.

``resolve_device("auto")`` is CUDA when PyTorch sees a GPU, else the CPU; an
explicit device that is not available is refused with one line naming the fix.
Evaluation runs inside :func:`exact_float32` (TF32 off for matmuls and cuDNN
convolutions, flags restored afterwards), and :func:`environment` records the
flags, library versions and hardware with every result.

What a GPU does not make exact or fast here:

* training on CUDA is not bitwise reproducible (cuDNN picks kernels per batch
  shape; ``cudnn.deterministic`` is left off, and so is ``cudnn.benchmark``,
  since PGD and BPGD compaction change the batch shape from step to step):
  the bit-identical resume and ``imalib reproduce``'s bit-for-bit check hold
  on the CPU, a GPU re-run is compared within a tolerance;
* the pinned torch is a CUDA 13 build, which needs an NVIDIA driver >= 580;
  with an older one ``torch.cuda.is_available()`` is False and "cuda" is
  refused with the message below (check ``nvidia-smi`` before planning a job);
* the attacks synchronise with the host a few times per step (the
  compaction of finished samples); harmless for the CNNs, but the Moons MLP
  is bound by kernel launches on a GPU: run Moons on the CPU.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from imalib.errors import ConfigError

AUTO = "auto"


def resolve_device(device: str | torch.device | None = AUTO) -> torch.device:
    """The torch device that ``device`` names: "auto" (or None) is CUDA if available, else the CPU.

    Raises ConfigError (a one-line message naming the fix) for a name torch does
    not know, or for cuda / mps when this machine cannot provide it.
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == AUTO):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"device={device!r} is not a torch device: use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={str(device)!r} was asked for but CUDA is not available here (no GPU, or a "
                f"driver too old for torch {torch.__version__}): use --device cpu or --device auto"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ConfigError(
                f"device={str(device)!r}: this machine has {count} CUDA device(s): use cuda:0 to cuda:{count - 1}"
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={str(device)!r} was asked for but MPS is not available here: use --device cpu")
    return resolved


def device_name(device: str | torch.device | None = AUTO) -> str:
    """``resolve_device`` as the plain string the run functions take ("cpu", "cuda", "cuda:1")."""
    return str(resolve_device(device))


def numerics_flags() -> dict[str, Any]:
    """The global switches that change float32 results on a GPU (none of them matters on the CPU)."""
    cudnn = torch.backends.cudnn
    return {
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(cudnn.allow_tf32),
        "cudnn_deterministic": bool(cudnn.deterministic),
        "cudnn_benchmark": bool(cudnn.benchmark),
        "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled()),
    }


@contextmanager
def exact_float32() -> Iterator[None]:
    """Run the block with TF32 off (matmul and cuDNN) and restore the previous flags on exit.

    TF32 rounds convolution inputs to 10 mantissa bits on Ampere and later GPUs;
    the paper's evaluation judges iterates that sit just past the decision
    boundary, where that rounding can flip a verdict.
    """
    matmul, conv = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = conv


def environment() -> dict[str, Any]:
    """Library versions, hardware and numerics flags, recorded with every result.

    The flags are those in force when this is called; the evaluation itself
    always runs with TF32 off (``evaluation_tf32`` False).
    """
    import numpy
    import sklearn

    cuda = torch.cuda.is_available()
    record: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "sklearn": sklearn.__version__,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the SIMD kernels torch dispatches to
        "cuda": torch.cuda.get_device_name(0) if cuda else None,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if cuda else None,
        "evaluation_tf32": False,
        "cpu_model": cpu_model(),
        # the settings that choose the CPU kernels (None: the library's own choice)
        "mkl_cbwr": os.environ.get("MKL_CBWR"),
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY"),
    }
    record.update(numerics_flags())
    return record


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux; None elsewhere): which processor made a record."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def free_cuda_bytes(device: torch.device) -> int | None:
    """Free memory on a CUDA device (None on any other device)."""
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free)


__all__ = [
    "AUTO",
    "cpu_model",
    "device_name",
    "environment",
    "exact_float32",
    "free_cuda_bytes",
    "numerics_flags",
    "resolve_device",
]
