"""The results page's ground floor: the JSON files with their dates and machines, and the number formats."""
from __future__ import annotations

import datetime
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"


# --- loading -------------------------------------------------------------------------------------


def commit_dates() -> dict[str, str]:
    """File name -> YYYY-MM-DD (UTC) of the last commit that changed it; today for new or modified files."""
    env = {**os.environ, "TZ": "UTC"}
    try:
        log = subprocess.run(["git", "log", "--format=@%ad", "--date=format-local:%Y-%m-%d", "--name-only", "--",
                              "benchmarks/results"], cwd=REPO, env=env, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "benchmarks/results"],
                                cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return {}
    dates: dict[str, str] = {}
    day = ""
    for line in log.stdout.splitlines():
        if line.startswith("@"):
            day = line[1:]
        elif line.strip():
            dates.setdefault(Path(line).name, day)  # newest first: the first date seen is the last change
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    for line in status.stdout.splitlines():
        dates[Path(line[3:].strip()).name] = today
    return dates


@dataclass
class Results:
    """The JSON files of benchmarks/results by name, their dates, and which ones the page used."""

    data: dict[str, dict[str, Any]]
    dates: dict[str, str]
    used: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, folder: Path = RESULTS) -> "Results":
        data = {p.name: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
        return cls(data, commit_dates())

    def get(self, name: str) -> dict[str, Any] | None:
        return self.data.get(name)

    def present(self, files: dict[str, str]) -> list[tuple[str, str, dict[str, Any]]]:
        """(name, command, data) of each of ``files`` (name -> the command that writes it) that exists."""
        return [(name, command, self.data[name]) for name, command in files.items() if name in self.data]

    def source(self, name: str, command: str) -> str:
        """One provenance line: the command, the file, the machine, the date; marks the file as rendered."""
        self.used.add(name)
        d = self.data[name]
        date = d.get("date") or (d.get("machine") or {}).get("date") or self.dates.get(name, "date unknown")
        link = f"[`{name}`](../benchmarks/results/{name})"
        return f"- `{command}` → {link} · {machine(d.get('machine') or {})} · {date}"


def machine(m: dict[str, Any]) -> str:
    """The machine as the JSON describes it (``summary`` where the script recorded one)."""
    if m.get("summary"):
        text = m["summary"]
    else:
        cores = m.get("cores") or m.get("cpu_cores")
        text = ", ".join(str(x) for x in (f"{cores}-core {m.get('cpu', '?')}", m.get("platform")) if x)
    extra = [f"ISA {m['isa']}" if m.get("isa") else "", "AVX-512 VNNI" if m.get("avx512_vnni") else "",
             f"onnxruntime {m['versions']['onnxruntime']}" if "onnxruntime" in m.get("versions", {}) else ""]
    return ", ".join([text, *(e for e in extra if e)])


# --- formatting ----------------------------------------------------------------------------------


def pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def pts(x: float | None, digits: int = 2) -> str:
    return "" if x is None else f"{100 * x:+.{digits}f}"


def points(a: dict[str, Any]) -> str:
    """A top-1 drop already in points, with its paired 95% interval."""
    return f"{a['top1_drop']:+.2f} ± {a['top1_drop_ci95']:.2f}"


def mean_std(ms: dict[str, float] | None) -> str:
    return "" if not ms else f"{pct(ms['mean'])} ± {pct(ms['std'])}"


def diff(ms: dict[str, float] | None) -> str:
    return "" if not ms else f"{pts(ms['mean'])} ± {pct(ms['std'])}"


def per_seed(ms: dict[str, Any] | None) -> str:
    return "" if not ms else " ".join(pts(v, 1) for v in ms["per_seed"].values())


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def bold(text: str, on: bool) -> str:
    return f"**{text}**" if on and text else text


def seeds(values: list[int]) -> str:
    return ",".join(map(str, values))


def ms(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f} ms"


def ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def px(key: str) -> str:
    return key.replace("px", " px")
