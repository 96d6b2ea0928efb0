"""`engine.device`: which model goes where, with CUDA faked (these machines have none)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from stream_mmsa import device
from stream_mmsa.config import ConfigError, EngineConfig, load_config
from stream_mmsa.device import DeviceError, Placement, load_asr_placed, resolve_placement


def visible(monkeypatch: pytest.MonkeyPatch, in_torch: int, in_ctranslate2: int) -> None:
    monkeypatch.setattr(device, "cuda_devices", lambda: (in_torch, in_ctranslate2))


@pytest.mark.parametrize(
    ("counts", "torch_device", "asr", "compute"),
    [
        ((0, 0), "cpu", "cpu", "int8"),
        ((1, 1), "cuda", "cuda", "float16"),
        ((1, 0), "cuda", "cpu", "int8"),  # a CTranslate2 build without CUDA
        ((0, 2), "cpu", "cuda", "float16"),  # a CPU-only torch wheel
    ],
)
def test_auto_puts_each_model_where_its_library_sees_cuda(
    monkeypatch: pytest.MonkeyPatch, counts, torch_device: str, asr: str, compute: str
) -> None:
    visible(monkeypatch, *counts)
    placement = resolve_placement("auto")
    assert placement.torch == torch.device(torch_device)
    assert (placement.asr, placement.asr_compute_type) == (asr, compute)


def test_cpu_never_asks_for_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    def probe() -> tuple[int, int]:
        raise AssertionError("engine.device=cpu probed CUDA")

    monkeypatch.setattr(device, "cuda_devices", probe)
    assert resolve_placement("cpu") == Placement(torch.device("cpu"), "cpu")


def test_cuda_says_which_library_sees_no_device(monkeypatch: pytest.MonkeyPatch) -> None:
    visible(monkeypatch, 0, 0)
    with pytest.raises(DeviceError, match="torch sees no CUDA device and CTranslate2 sees no"):
        resolve_placement("cuda")
    visible(monkeypatch, 1, 0)
    with pytest.raises(DeviceError, match=r"but CTranslate2 sees no CUDA device; use engine"):
        resolve_placement("cuda")
    visible(monkeypatch, 1, 1)
    assert resolve_placement("cuda") == Placement(torch.device("cuda"), "cuda")


def test_this_machine_resolves_without_error() -> None:
    """The real probe (torch and CTranslate2 asked): on a machine without CUDA, auto is CPU."""
    in_torch, in_ctranslate2 = device.cuda_devices()
    placement = resolve_placement("auto")
    assert (placement.torch.type == "cuda") == (in_torch > 0)
    assert (placement.asr == "cuda") == (in_ctranslate2 > 0)


def test_a_driver_ctranslate2_cannot_use_counts_as_none(monkeypatch: pytest.MonkeyPatch) -> None:
    import ctranslate2

    def broken() -> int:
        raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")

    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", broken)
    assert device.cuda_devices()[1] == 0


def test_auto_falls_back_to_the_cpu_when_the_recogniser_cannot_start_on_cuda(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    loads: list[tuple[str, str]] = []

    def load(where: str, compute_type: str) -> str:
        loads.append((where, compute_type))
        if where == "cuda":
            raise RuntimeError("Library libcublas.so.12 is not found or cannot be loaded")
        return "model"

    on_cuda = Placement(torch.device("cuda"), "cuda")
    with caplog.at_level(logging.WARNING, logger="stream_mmsa.device"):
        model, placement = load_asr_placed("auto", on_cuda, load)
    assert model == "model" and placement == Placement(torch.device("cuda"), "cpu")
    assert loads == [("cuda", "float16"), ("cpu", "int8")]
    assert "runs on the CPU" in caplog.text
    with pytest.raises(RuntimeError, match="libcublas"):
        load_asr_placed("cuda", on_cuda, load)  # asked for CUDA: no silent fallback


def test_device_is_a_typed_engine_setting() -> None:
    assert EngineConfig().device == "auto"
    assert load_config(None, ["engine.device=cuda"]).engine.device == "cuda"
    with pytest.raises(ConfigError, match=r"engine\.device.*got 'gpu'"):
        load_config(None, ["engine.device=gpu"])


def test_runtime_places_every_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runtime hands the placement to the three loaders and the worker (models faked)."""
    from stream_mmsa import engine
    from stream_mmsa.train import run

    asked: dict[str, object] = {}

    class Fusion(torch.nn.Module):
        config = SimpleNamespace(input_dims={"text": 384, "audio": 35, "vision": 35})

    model = torch.nn.Module()
    model.fusion = Fusion()

    def load_for_eval(checkpoint, where):
        asked["torch"] = where
        return model, {}, object()

    def load_asr_model(*args, device, compute_type, **kwargs):
        asked["asr"] = (device, compute_type)
        return "whisper"

    monkeypatch.setattr(run, "load_for_eval", load_for_eval)
    monkeypatch.setattr(engine, "load_asr_model", load_asr_model)
    visible(monkeypatch, 1, 1)
    runtime = engine.Runtime(EngineConfig(device="auto"))
    assert asked == {"torch": torch.device("cuda"), "asr": ("cuda", "float16")}
    assert runtime.worker.device == torch.device("cuda") and runtime.asr_model == "whisper"
    assert runtime.placement.describe() == "fusion + text encoder on cuda, ASR on cuda (float16)"
    asyncio.run(runtime.__aexit__())  # releases the workers' threads


def test_gpu_check_without_cuda_says_so_in_one_line() -> None:
    """scripts/check_gpu.py where there is no GPU (hidden here, whatever the machine)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "check_gpu.py"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("check_gpu: no CUDA device for the engine (torch sees 0")
    assert "nothing was checked" in done.stderr
