"""Which integer kernels this CPU runs, and where a bundle's figures were measured (provenance).

An INT8 figure holds for the kind of CPU it was measured on: onnxruntime picks its U8S8 kernels by
CPUID (DESIGN.md section 4). On x86 without VNNI they run on VPMADDUBSW, whose int16 sum of two
u8·s8 products saturates for 8-bit weights; with VNNI or AMX the products are summed in int32;
ARM has its own dot-product kernels. So the ISA *class* below is what decides whether two machines
compute the same INT8 logits, and it is what the manifest records beside every accuracy figure.

Detection reads ``/proc/cpuinfo`` on Linux and numpy's own CPU dispatch table elsewhere (numpy
is a runtime dependency and keeps that table current for every platform it builds for). A CPU
neither can read is ``unknown``: one line says so and nothing stops.
"""
from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Any

UNKNOWN = "unknown"

# x86 classes, best first: (class, any of these /proc/cpuinfo flags, any of these numpy features).
X86_CLASSES = (
    ("x86-amx", ("amx_int8",), ()),
    ("x86-avx512-vnni", ("avx512_vnni",), ("AVX512VNNI",)),
    ("x86-avx-vnni", ("avx_vnni",), ()),
    ("x86-avx512", ("avx512bw",), ("AVX512BW",)),
    ("x86-avx2", ("avx2",), ("AVX2",)),
)
ARM_CLASSES = (
    ("arm64-i8mm", ("i8mm",), ()),
    ("arm64-dotprod", ("asimddp",), ("ASIMDDP",)),
)
# Classes whose U8S8 kernels sum u8·s8 pairs in int16 (VPMADDUBSW) and so saturate with 8-bit weights.
INT16_PAIR_SUM = frozenset({"x86-avx512", "x86-avx2", "x86-sse"})


def isa_class(machine: str, flags: set[str], numpy_features: set[str] = frozenset()) -> str:
    """The integer-kernel class of a CPU from its machine name and feature flags (lower-case
    /proc/cpuinfo names, or numpy's upper-case feature names)."""
    m = machine.lower()
    if m in ("x86_64", "amd64", "i386", "i686", "x86"):
        for name, proc, npy in X86_CLASSES:
            if flags & set(proc) or numpy_features & set(npy):
                return name
        return "x86-sse"
    if m in ("aarch64", "arm64", "armv8l"):
        for name, proc, npy in ARM_CLASSES:
            if flags & set(proc) or numpy_features & set(npy):
                return name
        return "arm64-neon"
    return m or UNKNOWN


def saturates_8bit_u8s8(isa: str) -> bool:
    """Whether this class's U8S8 kernels can saturate on 8-bit weights (onnxruntime's quantization docs)."""
    return isa in INT16_PAIR_SUM


@functools.lru_cache(maxsize=1)
def this_cpu() -> dict[str, str]:
    """``{"isa", "cpu", "machine"}`` of this machine; ``isa`` is ``unknown`` when it cannot be read."""
    machine = platform.machine()
    flags, model = _proc_cpuinfo()
    features = _numpy_features() if not flags else set()
    isa = isa_class(machine, flags, features) if (flags or features) else UNKNOWN
    return {"isa": isa, "cpu": model or platform.processor() or machine or UNKNOWN, "machine": machine or UNKNOWN}


def _proc_cpuinfo() -> tuple[set[str], str]:
    """(feature flags, model name) from /proc/cpuinfo's first processor; empty where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set(), ""
    flags, model = set(), ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:  # x86 "flags", ARM "Features"
            flags = set(value.split())
        elif key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
    return flags, model


def _numpy_features() -> set[str]:
    """numpy's CPU dispatch table (a private attribute, stable since numpy 1.20; absent -> empty)."""
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            table = __import__(module, fromlist=["__cpu_features__"]).__cpu_features__
        except (ImportError, AttributeError):
            continue
        return {name for name, present in table.items() if present}
    return set()


def measured_here(engine: str) -> dict[str, Any]:
    """What a figure measured now, in this process, was measured on: the CPU and the engine that ran it."""
    return {**this_cpu(), "engine": engine}


def describe(where: dict[str, Any] | None) -> str:
    """One phrase for a provenance record: 'x86-avx512-vnni (Intel Xeon ...; onnxruntime ...)', or 'unknown'."""
    if not where:
        return UNKNOWN
    detail = "; ".join(str(where[k]) for k in ("cpu", "engine") if where.get(k))
    return f"{where.get('isa', UNKNOWN)} ({detail})" if detail else str(where.get("isa", UNKNOWN))


def provenance_note(file: str, recorded: dict[str, Any] | None, here: dict[str, str] | None = None) -> str | None:
    """The line a runtime prints once at start when this device is not where ``file``'s accuracy
    was measured (or that is unknown); ``None`` when they are the same ISA class."""
    here = here or this_cpu()
    if here["isa"] == UNKNOWN:
        return (f"note: this device's CPU features could not be read, so whether {file} computes here what it "
                f"computed where its accuracy was measured ({describe(recorded)}) is unknown; re-measure with "
                f"python -m runtime.bench <bundle> --data <labelled images>")
    if not recorded:
        return (f"note: {file}: measured on: {UNKNOWN} (a bundle written before provenance was recorded); this "
                f"device is {describe(here)}; re-measure top-1 here with python -m runtime.bench <bundle> --data "
                f"<labelled images>")
    if recorded.get("isa") == here["isa"]:
        return None
    return (f"note: {file}'s accuracy was measured on {describe(recorded)}; this device is {describe(here)}, whose "
            f"integer kernels may differ: re-measure top-1 here with python -m runtime.bench <bundle> --data "
            f"<labelled images>")
