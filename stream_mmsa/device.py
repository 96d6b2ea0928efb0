"""Where the engine's models run: `engine.device` (auto | cpu | cuda) against the machine.

Three models can use a GPU: the fusion model and the text encoder (torch), and the speech
recogniser (faster-whisper on CTranslate2, float16 on CUDA; int8 on the CPU). torch and
CTranslate2 find CUDA each on their own (a CPU-only build of either sees no device), so
both are asked. `auto` puts each model on CUDA when its library sees a device and keeps the
CPU otherwise; `cuda` needs both and says at start which one sees none; `cpu` never touches
CUDA.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import torch

log = logging.getLogger(__name__)

DeviceChoice = Literal["auto", "cpu", "cuda"]
T = TypeVar("T")


class DeviceError(ValueError):
    """`engine.device=cuda` on a machine where torch or CTranslate2 sees no CUDA device."""


@dataclass(frozen=True, slots=True)
class Placement:
    """Where each model runs: `torch` for the fusion model and text encoder, `asr` for the
    recogniser (with the CTranslate2 compute type that suits it)."""

    torch: torch.device
    asr: Literal["cpu", "cuda"]

    @property
    def asr_compute_type(self) -> str:
        return "float16" if self.asr == "cuda" else "int8"

    def describe(self) -> str:
        return f"fusion + text encoder on {self.torch}, ASR on {self.asr} ({self.asr_compute_type})"


CPU = Placement(torch.device("cpu"), "cpu")


def cuda_devices() -> tuple[int, int]:
    """CUDA devices that torch and CTranslate2 can use (0 where a build has no CUDA)."""
    import ctranslate2

    in_torch = torch.cuda.device_count() if torch.cuda.is_available() else 0
    try:
        in_ctranslate2 = ctranslate2.get_cuda_device_count()
    except RuntimeError:  # a driver too old for its CUDA runtime: nothing it can use
        in_ctranslate2 = 0
    return in_torch, in_ctranslate2


def resolve_placement(choice: DeviceChoice) -> Placement:
    """The placement `choice` means on this machine; DeviceError when `cuda` cannot be met."""
    if choice == "cpu":
        return CPU
    in_torch, in_ctranslate2 = cuda_devices()
    if choice == "cuda":
        missing = [
            f"{name} sees no CUDA device"
            for name, count in (("torch", in_torch), ("CTranslate2", in_ctranslate2))
            if count == 0
        ]
        if missing:
            raise DeviceError(
                f"engine.device=cuda, but {' and '.join(missing)}; "
                "use engine.device=auto (CUDA where present) or cpu"
            )
    elif choice != "auto":
        raise DeviceError(f"engine.device must be auto, cpu or cuda, not {choice!r}")
    return Placement(
        torch.device("cuda" if in_torch else "cpu"), "cuda" if in_ctranslate2 else "cpu"
    )


def load_asr_placed(
    choice: DeviceChoice, placement: Placement, load: Callable[[str, str], T]
) -> tuple[T, Placement]:
    """`load(device, compute_type)` where `placement` says, and the placement it ended on.

    Under `auto`, a recogniser that cannot start on CUDA (CTranslate2 finds the device but
    not the cuBLAS/cuDNN it needs) runs on the CPU instead, with a warning; under `cuda` the
    error stands.
    """
    try:
        return load(placement.asr, placement.asr_compute_type), placement
    except RuntimeError as error:
        if placement.asr == "cpu" or choice == "cuda":
            raise
        log.warning("speech recogniser cannot run on CUDA (%s): it runs on the CPU", error)
        on_cpu = Placement(placement.torch, "cpu")
        return load(on_cpu.asr, on_cpu.asr_compute_type), on_cpu
