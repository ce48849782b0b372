"""Choosing the one device the inference worker owns, and saying why."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from processor.config import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    half: bool
    reason: str

    def __str__(self) -> str:
        return str(self.device)


def choose_device(preference: str = "auto") -> DeviceChoice:
    """CUDA (half precision) when it is there, else the CPU; ``preference`` forces either."""
    available = torch.cuda.is_available()
    if preference == "cuda" and not available:
        build = (
            f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        )
        raise ConfigError(
            f"PROCESSOR_DEVICE=cuda but torch sees no CUDA device (torch {torch.__version__}, "
            f"{build}); check the driver and the NVIDIA container runtime, or set "
            "PROCESSOR_DEVICE=auto"
        )
    if preference == "cpu":
        choice = DeviceChoice(torch.device("cpu"), False, "PROCESSOR_DEVICE=cpu")
    elif available:
        name = torch.cuda.get_device_name(0)
        choice = DeviceChoice(torch.device("cuda:0"), True, f"CUDA device found: {name}")
    else:
        why = "torch is a CPU build" if torch.version.cuda is None else "no CUDA device visible"
        choice = DeviceChoice(torch.device("cpu"), False, f"no CUDA: {why}")
    log.info(
        "device chosen device=%s half=%s reason=%r", choice.device, choice.half, choice.reason
    )
    return choice
