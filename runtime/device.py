"""What a benchmark figure was measured on: machine, accelerator, Jetson power mode, software.

Everything here reads files or runs read-only tools (nvidia-smi, nvpmodel -q, tegrastats); a tool
that is absent leaves its field out rather than failing the benchmark.
"""
from __future__ import annotations

import dataclasses
import glob
import importlib
import os
import platform
import re
import shutil
import subprocess
import threading
from pathlib import Path
from formats.bench_setup import DeviceInfo, GpuInfo, JetsonInfo, SoftwareVersions
from formats.isa import this_cpu


def device_info() -> DeviceInfo:
    return DeviceInfo(hostname=platform.node(), platform=platform.platform(), machine=platform.machine(),
                      cpu=cpu_model(), cpu_cores=os.cpu_count(), memory_gb=_memory_gb(),
                      isa=this_cpu()["isa"],  # the integer-kernel class: whether INT8 figures carry over
                      gpus=nvidia_smi_gpus(), jetson=jetson_info())


def software_versions() -> SoftwareVersions:
    versions = {"python": platform.python_version()}
    for name in ("numpy", "PIL", "onnxruntime", "tensorrt", "starlette", "uvicorn"):
        try:
            versions["Pillow" if name == "PIL" else name] = importlib.import_module(name).__version__
        except ImportError:
            continue
    providers = None
    if "onnxruntime" in versions:
        providers = tuple(importlib.import_module("onnxruntime").get_available_providers())
    return SoftwareVersions(**{f.name: versions.get(f.name) for f in dataclasses.fields(SoftwareVersions)
                               if f.name != "onnxruntime_providers"}, onnxruntime_providers=providers)


def cpu_model() -> str:
    """The CPU's model name (formats.isa reads it with the ISA class)."""
    return this_cpu()["cpu"]


def _memory_gb() -> float | None:
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        return round(kb / 2**20, 1)
    except (OSError, AttributeError):
        return None


def _run(cmd: list[str], timeout: float = 5.0) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def nvidia_smi_gpus() -> tuple[GpuInfo, ...]:
    queries = ["name", "driver_version", "memory.total", "clocks.sm", "clocks.max.sm", "power.limit"]
    out = _run(["nvidia-smi", f"--query-gpu={','.join(queries)}", "--format=csv,noheader"])
    if not out:
        return ()
    return tuple(GpuInfo(*(v.strip() for v in line.split(","))) for line in out.strip().splitlines())


def jetson_info() -> JetsonInfo | None:
    """L4T release, nvpmodel power mode and current clocks, on a Jetson; None elsewhere."""
    release = Path("/etc/nv_tegra_release")
    if not release.is_file():
        return None
    mode = _run(["nvpmodel", "-q"])
    power_mode = " ".join(line.strip() for line in mode.splitlines() if line.strip()) if mode else None
    return JetsonInfo(l4t=release.read_text().splitlines()[0].strip(), power_mode=power_mode, clocks_hz=_clocks())


def _clocks() -> dict[str, int]:
    clocks = {}
    for path in sorted(glob.glob("/sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq")):
        clocks[path.split("/")[5]] = int(Path(path).read_text()) * 1000  # kHz
    for path in sorted(glob.glob("/sys/class/devfreq/*/cur_freq")):  # GPU, EMC, DLA on Jetson
        clocks[Path(path).parent.name] = int(Path(path).read_text())
    return clocks


_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)mW/(\d+)mW")  # JetPack 5/6: "VDD_IN 5123mW/5001mW"
_OLD_RAIL = re.compile(r"\b(POM_[A-Z0-9_]+) (\d+)/(\d+)")  # JetPack 4: "POM_5V_IN 3107/3107"
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")  # the whole module's input power


def parse_tegrastats(line: str) -> dict[str, int]:
    """Instantaneous power per rail in mW from one tegrastats line."""
    rails = {name: int(now) for name, now, _ in _RAIL.findall(line)}
    rails.update({name: int(now) for name, now, _ in _OLD_RAIL.findall(line)})
    return rails


class PowerSampler:
    """Samples tegrastats while active; ``mean_mw`` is the module input power over that time.

    Without tegrastats (any machine but a Jetson) it does nothing and ``mean_mw`` is None.
    """

    def __init__(self, interval_ms: int = 100) -> None:
        self.samples: list[int] = []
        self._cmd = ["tegrastats", "--interval", str(interval_ms)]
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PowerSampler":
        if shutil.which("tegrastats"):
            self._proc = subprocess.Popen(self._cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            rails = parse_tegrastats(line)
            rail = next((r for r in INPUT_RAILS if r in rails), None)
            if rail:
                self.samples.append(rails[rail])

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def mean_mw(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None
