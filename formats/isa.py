"""Which integer kernels this CPU runs, and where a bundle's figures were measured (provenance).

An INT8 figure holds for the kind of CPU it was measured on: onnxruntime picks its U8S8 kernels by
CPUID (DESIGN.md section 4). On x86 without VNNI they run on VPMADDUBSW, whose int16 sum of two
u8·s8 products saturates for 8-bit weights; with VNNI or AMX the products are summed in int32;
ARM has its own dot-product kernels. So the ISA *class* below is what decides whether two machines
compute the same INT8 logits, and it is what the manifest records beside every accuracy figure.

Detection asks the CPU itself, in this process: numpy's CPU dispatch table runs CPUID (and checks
that the OS enabled the registers), as onnxruntime does when it picks its kernels; numpy is a
runtime dependency and keeps that table current on every platform it builds for. ``/proc/cpuinfo``
only refines it with what numpy does not name (AMX on a CPU numpy sees with AVX-512 VNNI; i8mm on
an ARM CPU it sees with dot products), and stands in for it where the table cannot be read. (Under
an emulator or a hypervisor that hides features, CPUID and ``/proc/cpuinfo`` can disagree; CPUID
is what the kernels follow.) A CPU neither can read is ``unknown``: one line says so and nothing stops.
"""
from __future__ import annotations

import functools
import platform
from pathlib import Path
from typing import Any

UNKNOWN = "unknown"

# x86 classes, best first: (class, numpy's features, /proc/cpuinfo flags), all of a row's needed. Where numpy's
# table is read it decides, and /proc adds only what numpy does not name (REFINED_FROM_PROC).
X86_CLASSES = (
    ("x86-amx", ("AVX512VNNI",), ("amx_int8",)),
    ("x86-avx512-vnni", ("AVX512VNNI",), ("avx512_vnni",)),
    ("x86-avx-vnni", (), ("avx_vnni",)),  # AVX-VNNI without AVX-512: numpy does not name it, so /proc alone
    ("x86-avx512", ("AVX512BW",), ("avx512bw",)),
    ("x86-avx2", ("AVX2",), ("avx2",)),
)
REFINED_FROM_PROC = frozenset({"amx_int8", "i8mm"})
ARM_CLASSES = (
    ("arm64-i8mm", ("ASIMDDP",), ("i8mm",)),
    ("arm64-dotprod", ("ASIMDDP",), ("asimddp",)),
)


def isa_class(machine: str, flags: set[str], numpy_features: set[str] = frozenset()) -> str:
    """The integer-kernel class of a CPU from its machine name, numpy's feature names (CPUID, in
    this process) and /proc/cpuinfo's lower-case flags; either may be empty."""
    m = machine.lower()
    rows = X86_CLASSES if m in ("x86_64", "amd64", "i386", "i686", "x86") else \
        ARM_CLASSES if m in ("aarch64", "arm64", "armv8l") else None
    if rows is None:
        return m or UNKNOWN
    for name, npy, proc in rows:
        if _has(npy, proc, flags, numpy_features):
            return name
    return "x86-sse" if rows is X86_CLASSES else "arm64-neon"


def _has(npy: tuple[str, ...], proc: tuple[str, ...], flags: set[str], numpy_features: set[str]) -> bool:
    if not numpy_features:  # /proc/cpuinfo alone
        return set(proc) <= flags
    if not npy:  # numpy cannot see it, and /proc/cpuinfo may describe another CPU than CPUID does here
        return False
    refined = set(proc) & REFINED_FROM_PROC  # what numpy's table does not name
    return set(npy) <= numpy_features and refined <= flags


@functools.lru_cache(maxsize=1)
def this_cpu() -> dict[str, str]:
    """``{"isa", "cpu", "machine"}`` of this machine; ``isa`` is ``unknown`` when it cannot be read."""
    machine = platform.machine()
    flags, model = _proc_cpuinfo()
    features = _numpy_features()
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
