"""Whether bf16 pays on a device: one answer for training's mixed precision and inference's vocoder."""

from __future__ import annotations

import torch


def native_bf16(device: str | torch.device | None = None) -> bool:
    """Whether `device` (default: CUDA when present, else the CPU) multiplies bf16 matrices natively: a CUDA GPU that
    supports it, or a CPU with AMX or AVX512-BF16, where oneDNN runs bf16 products and convolutions several times
    faster than fp32 (elsewhere a CPU emulates bf16, slower than fp32)."""
    kind = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda":
        return torch.cuda.is_bf16_supported()
    if kind != "cpu":
        return False
    return any(getattr(torch.cpu, f"_is_{unit}_supported", lambda: False)() for unit in ("amx_tile", "avx512_bf16"))
