"""Portable mode: one instruction set for every CPU kernel, so machines of one CPU family compute the same bits.

CPU float results depend on which kernels a library picks for the CPU it runs on (AVX-512 here, AVX2
there: other summation orders, other rounding), and training amplifies such differences until a verdict
flips. Portable mode pins every library's choice to one instruction set in each worker process before
torch loads: PyTorch's own kernels (`ATEN_CPU_CAPABILITY`), oneDNN's convolutions (`ONEDNN_MAX_CPU_ISA`) and
MKL's BLAS and LAPACK (`MKL_CBWR`, `MKL_ENABLE_INSTRUCTIONS`). With one torch thread per task (the runner's
rule) a rerun computes the same bits on the same kind of CPU whatever the number of workers. The pins do not
make an Intel and an AMD CPU agree: two runs of the same models, pinned, on an Intel Xeon and an AMD EPYC
trained different convolutional networks (docs/statistics.md, "Reproducibility across machines";
tests/benchmarks/kernel_fingerprint.py shows which kernel two machines disagree on). `environment()` records
what a run used, for the leaderboard's header."""
from __future__ import annotations

import os
import platform

PINNED_ISA = "AVX2"
PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2",
          "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
KERNEL_VARIABLES = tuple(PINNED)


def pin_kernels() -> None:
    """Pin the kernel choice for every process started from now on (the runner's spawned workers)."""
    os.environ.update(PINNED)


def cpuinfo(field: str, path: str = "/proc/cpuinfo") -> str:
    """The first value of the field named exactly `field` in /proc/cpuinfo ('' where there is none, e.g. off
    Linux)."""
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == field:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_model() -> str:
    return cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_generation(path: str = "/proc/cpuinfo") -> str:
    """The CPU's family and model numbers ('family 26 model 2'), which tell apart generations that share a
    model name (two 'AMD EPYC' machines of different speed and instruction sets); '' where unknown."""
    family, model = cpuinfo("cpu family", path), cpuinfo("model", path)
    return f"family {family} model {model}" if family and model else ""


def simd_flags() -> list[str]:
    """The CPU's vector instruction-set flags (x86: sse*, avx*, fma, amx*)."""
    return sorted({fl for fl in cpuinfo("flags").split() if fl.startswith(("sse", "avx", "fma", "amx"))})


def environment(portable: bool) -> dict:
    """What determines this process's float results: versions, kernel settings, the CPU."""
    import torch

    return {"portable": portable, "pinned": PINNED_ISA if portable else None,
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "kernel_settings": {k: os.environ.get(k) for k in KERNEL_VARIABLES},
            "cpu_model": cpu_model(), "cpu_generation": cpu_generation(), "cpu_flags": simd_flags(),
            "machine": platform.machine()}
