"""What a latency was measured on, so a table is never silently used on another device.

The fingerprint records everything that could explain a difference between two tables;
``device_key`` keeps only what must match for them to be interchangeable. Python or onnx
versions are recorded but left out of the key: they rarely move latency, and refusing a table
after every minor upgrade would train users to pass ``--allow-foreign-table`` by reflex.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path
from typing import Any

import hwprune


def cpu_model() -> str:
    """The marketing name of the CPU; /proc/cpuinfo first because platform.processor() is often empty."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "Model", "Hardware", "cpu model"):
        match = re.search(rf"^{key}\s*:\s*(.+)$", text, flags=re.MULTILINE)
        if match and match.group(1).strip():
            return match.group(1).strip()
    return platform.processor() or platform.machine() or "unknown"


def nvidia_driver_version() -> str | None:
    """The kernel driver version, which torch does not expose; None when it cannot be read."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text(errors="replace")
        match = re.search(r"Kernel Module\s+(?:for\s+\S+\s+)?([\d.]+)", text)
        if match:
            return match.group(1)
    except OSError:
        pass
    try:
        import pynvml  # optional; present when nvidia-ml-py is installed

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # any failure (no library, no driver) just means "unknown"
        return None


def gpu_fields(device_index: int = 0) -> dict[str, Any]:
    import torch

    props = torch.cuda.get_device_properties(device_index)
    return {
        "gpu_name": props.name,
        "gpu_capability": f"{props.major}.{props.minor}",
        "gpu_memory_mib": props.total_memory // 2**20,
        "gpu_driver": nvidia_driver_version(),
        "cuda_version": torch.version.cuda,
    }


def device_fingerprint(
    backend: str,
    *,
    threads: int | None,
    device: str = "cpu",
    runtime: str | None = None,
    runtime_version: str | None = None,
    precision: str = "fp32",
    device_index: int = 0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Common fields for every backend; the backend adds its own (provider, ...) through ``extra``."""
    import torch

    fp: dict[str, Any] = {
        "backend": backend,
        "device": device,
        "precision": precision,
        "cpu_model": cpu_model(),
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "threads": threads,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "runtime": runtime or backend,
        "runtime_version": runtime_version or torch.__version__,
        "hwprune": hwprune.__version__,
        "gpu_name": None,
        "gpu_driver": None,
        "cuda_version": None,
    }
    if device == "cuda" and torch.cuda.is_available():
        fp.update(gpu_fields(device_index))
    fp.update(extra or {})
    return fp


def device_key(fp: dict[str, Any]) -> str:
    """The fields that must be equal for two latency tables to describe the same device + backend.

    On CPU the thread count is part of the device (2 threads and 16 threads are different
    machines as far as latency goes), and so is the vector ISA the kernels use: cloud VMs of
    different hosts share a name like "Intel(R) Xeon(R) Processor", and the runtimes' blocked kernels
    reward multiples of 16 channels on an AVX-512 host but of 8 on an AVX2 one. On a GPU the board is part of
    the key, and host threads are not.
    """
    backend = str(fp.get("backend", "unknown"))
    if fp.get("provider"):
        backend += f":{fp['provider']}"
    parts = [backend]
    if fp.get("device") == "cuda":
        parts.append(f"gpu={fp.get('gpu_name', 'unknown')}")
    else:
        parts.append(f"cpu={fp.get('cpu_model', 'unknown')}")
        if fp.get("cpu_isa"):
            parts.append(f"isa={fp['cpu_isa']}")
        parts.append(f"threads={fp.get('threads', 'unknown')}")
    parts.append(str(fp.get("precision", "fp32")))
    return "|".join(parts)
