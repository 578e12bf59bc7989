"""The device contract: auto resolves, a missing GPU is refused, batches live on the asked device, TF32 flags."""

from __future__ import annotations

import pytest
import torch

from imalib.config import ConfigError
from imalib.data.base import ArrayDataset
from imalib.device import environment, exact_float32, numerics_flags, resolve_device
from imalib.train import _Ordered


def test_auto_is_cuda_when_available_else_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")


def test_cuda_without_cuda_is_one_line_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ConfigError) as caught:
            resolve_device(name)
        message = str(caught.value)
        assert "\n" not in message and "CUDA is not available" in message and "--device cpu" in message
    with pytest.raises(ConfigError, match="not a torch device"):
        resolve_device("gpu0")


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_every_tensor_a_batch_source_yields_is_on_the_requested_device(dtype: torch.dtype) -> None:
    # The meta device exists on every machine: a CPU-only check that nothing stays behind on the CPU.
    x = (torch.rand(10, 1, 4, 4) * 255).to(dtype)
    data = ArrayDataset(x, torch.arange(10) % 3)
    sources = [data.batches(4, device="meta"), data.batches(4, generator=torch.Generator().manual_seed(0),
                                                             device="meta"),
               data.ordered_batches(4, device="meta"), _Ordered(data, "meta").ordered_batches(4)]
    for batches in sources:
        seen = 0
        for x_b, y_b, idx_b in batches:
            assert x_b.device.type == y_b.device.type == idx_b.device.type == "meta"
            assert x_b.dtype == torch.float32 and idx_b.dtype == torch.int64
            seen += idx_b.shape[0]
        assert seen == 10
    x_b, y_b, idx_b = data.batch(torch.tensor([3, 1]), device="cpu")
    assert idx_b.tolist() == [3, 1] and y_b.tolist() == [0, 1]
    mask = torch.tensor([True, False])
    assert idx_b[mask].tolist() == [3]  # the methods' pattern idx[correct] with a mask from the same device


def test_exact_float32_turns_tf32_off_and_restores_the_flags() -> None:
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        for matmul, conv in ((True, True), (False, True), (True, False)):
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, conv
            with exact_float32():
                assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
                assert torch.backends.cudnn.conv.fp32_precision != "tf32"  # the newer API sees the same switch
            assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (matmul, conv)
        torch.backends.cudnn.allow_tf32 = True
        with pytest.raises(RuntimeError), exact_float32():
            raise RuntimeError("inside")
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_environment_records_versions_and_numerics_flags() -> None:
    record = environment()
    for key in ("torch", "python", "cuda_version", "cudnn_version", "cuda_matmul_allow_tf32", "cudnn_allow_tf32",
                "cudnn_deterministic", "cudnn_benchmark", "evaluation_tf32"):
        assert key in record
    assert record["torch"] == torch.__version__ and record["evaluation_tf32"] is False
    assert record["cudnn_allow_tf32"] == torch.backends.cudnn.allow_tf32
    assert set(numerics_flags()) <= set(record)
