"""Mixed precision: autocast for bf16/fp16, the gradient scaler, the optimiser step under it, and whether
this CPU has native kernels for a precision (without them autocast emulates it, far slower than fp32)."""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import torch

from imas.config import Config, Precision

AUTOCAST_DTYPES = {Precision.fp32: None, Precision.bf16: torch.bfloat16, Precision.fp16: torch.float16}


def autocast_context(cfg: Config, device: torch.device) -> contextlib.AbstractContextManager:
    """torch.autocast for bf16/fp16, disabled for fp32 (one code path for all precisions)."""
    dtype = AUTOCAST_DTYPES[cfg.train.precision]
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def cpu_has_native(precision: Precision) -> bool:
    """True if this CPU has oneDNN kernels for `precision` (bf16: AVX512-BF16 or AMX; fp16: AVX512-FP16/AMX).

    Without them torch.autocast on the CPU emulates the low precision, which is far slower than fp32."""
    if precision is Precision.bf16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if precision is Precision.fp16:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return True


def cpu_model() -> str:
    """The CPU's model name as the OS reports it (/proc/cpuinfo on Linux), e.g. "Intel(R) Xeon(R) Processor";
    platform.processor() elsewhere, "unknown CPU" when neither says."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_description() -> str:
    """The CPU's vector ISA and whether it has native bf16, e.g. "AVX2, no native bf16": what decides how fast
    a CPU trains, and so what every benchmark record names."""
    native = "" if cpu_has_native(Precision.bf16) else "no "
    return f"{torch.backends.cpu.get_cpu_capability()}, {native}native bf16"


def precision_warning(precision: Precision, device: torch.device) -> str | None:
    """One sentence for the log when `precision` will be slow on `device`, else None.

    Emulated low precision on a CPU is not a little but many times slower than fp32 (docs/performance.md
    has the measurement), so the run says so and names the fix as a key and value, which works with
    imas-train (--opt train.precision=fp32) and single_run.sh (train.precision=fp32) alike."""
    if device.type != "cpu" or cpu_has_native(precision):
        return None
    capability = torch.backends.cpu.get_cpu_capability()
    return (
        f"train.precision {precision.value} on this CPU ({capability}, no native {precision.value} kernels) "
        "is emulated and far slower than fp32 (the repository's docs/performance.md has the measurement); "
        "set train.precision: fp32 (override train.precision=fp32)"
    )


def make_grad_scaler(cfg: Config, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling is needed for fp16 only; for fp32/bf16 the scaler is a pass-through."""
    return torch.amp.GradScaler(device.type, enabled=cfg.train.precision is Precision.fp16)


def optimizer_step(
    loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler
) -> None:
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
