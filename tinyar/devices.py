"""Choosing a tinygrad device, with one-line errors that say what to install or pick instead."""
from __future__ import annotations

import os

BACKENDS = ("CPU", "CPU:LLVM", "CL", "CUDA", "NV", "AMD", "METAL")


class DeviceError(RuntimeError):
    """The device can't be used here; the message says what to do."""


def probe(name: str) -> str | None:
    """Run one tiny kernel on `name`. -> None if it works, else a one-line reason."""
    from tinygrad import Tensor
    try:
        if (Tensor([1.0], device=name) + 1).item() != 2.0:
            return "computed a wrong result"
        return None
    except Exception as e:  # backends fail in many ways: missing compiler, driver, library
        msg = str(e).strip().splitlines()
        return f"{type(e).__name__}: {msg[0] if msg else ''}"[:160]


def working_devices() -> list[str]:
    return [d for d in BACKENDS if probe(d) is None]


def use_device(spec: str | None) -> str:
    """Make `spec` (e.g. 'CL', 'CPU:LLVM', or a comma list 'CPU:0,CPU:1') tinygrad's default.
    None keeps DEV or tinygrad's own choice. -> the device actually used."""
    from tinygrad import Device
    from tinygrad.helpers import DEV
    if spec:
        first = spec.split(",")[0].strip().upper()
        reason = probe(first)
        if reason:
            ok = working_devices()
            raise DeviceError(f"device {first} does not work here ({reason}); working devices: "
                              f"{', '.join(ok) or 'none'}")
        DEV.value = first
        os.environ["DEV"] = first
        return first
    try:
        name = Device.DEFAULT
        reason = probe(name)
    except Exception as e:
        name, reason = "default", str(e).splitlines()[0] if str(e) else type(e).__name__
    if reason:
        raise DeviceError(f"no usable tinygrad device ({name}: {reason}); for the CPU backend install a C "
                          f"compiler (apt-get install -y clang), or pick one with --device")
    return name
