"""What one decode and one KServe JSON parse really take: the numbers behind serve's printed memory bound.

Each case runs in a fresh process (Linux: ``VmHWM``, the peak resident size, so nothing before it may
count): the peak resident memory above the process's size just before, for

- one image of ``--megapixels`` (default 40, serve's ``--max-pixels``) in every pixel mode an
  attacker can send (float32 and int32 TIFF, RGBA/RGB/L PNG) through the runtime's own decode path
  (``formats.preprocessing.load_input``, 224 px output), in bytes per pixel;
- one ``--json-mb`` KServe-style body of the shapes that parse worst (flat ``0,``, nested ``[0],``,
  empty ``[],`` and ``{},``) through ``json.loads``, in bytes per byte of body.

``runtime.serve.state`` takes its constants from these (with a margin). Writes
``benchmarks/results/serve_memory.json``.

    python benchmarks/serve_memory.py [--megapixels 40] [--json-mb 10]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.machine import machine_info, write_json  # noqa: E402

MODES = {"F": "tiff", "I": "tiff", "RGBA": "png", "RGB": "png", "L": "png"}
JSON_ITEMS = {"flat 0,": "0,", "nested [0],": "[0],", "empty [],": "[],", "empty {},": "{},"}

PROBE = """
import json, sys
sys.path.insert(0, {repo!r})
def status(key): return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) * 1024
def now(): return status("VmRSS")
def peak(): return status("VmHWM")  # this process image's peak (ru_maxrss would carry the parent's over exec)
from formats.preprocessing import PreprocessSpec, load_input
path = sys.argv[1]
data = open(path, "rb").read()
spec = PreprocessSpec.from_dict({{"input_size": [224, 224], "resize_size": 256, "interpolation": "bilinear",
                                  "mean": [0.5] * 3, "std": [0.5] * 3, "scale": 1 / 255}})
before = max(now(), peak())
if path.endswith(".json"):
    json.loads(data)
else:
    load_input(data, spec, max_pixels=10 ** 9)
print(peak() - before)
"""


def write_image(path: Path, mode: str, pixels: int) -> None:
    import numpy as np
    from PIL import Image
    w = int((pixels * 1.6) ** 0.5)
    h = pixels // w
    rng = np.random.default_rng(0)
    if mode in ("F", "I"):
        arr = rng.integers(0, 200, size=(h, w)).astype(np.float32 if mode == "F" else np.int32)
    else:
        arr = rng.integers(0, 255, size=(h, w, len(mode)) if len(mode) > 1 else (h, w), dtype=np.uint8)
    Image.fromarray(arr, mode=mode).save(path, **({"compress_level": 1} if path.suffix == ".png" else {}))


def probe(path: Path) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE.format(repo=str(REPO)), str(path)], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--megapixels", type=float, default=40.0)
    p.add_argument("--json-mb", type=float, default=10.0)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serve_memory.json")
    args = p.parse_args(argv)
    pixels, size = int(args.megapixels * 1e6), int(args.json_mb * 1e6)
    rows: dict[str, dict] = {"decode": {}, "json": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, ext in MODES.items():
            path = Path(tmp) / f"image-{mode}.{ext}"
            write_image(path, mode, pixels)
            used = probe(path)
            rows["decode"][mode] = {"bytes": used, "bytes_per_pixel": round(used / pixels, 2)}
            path.unlink()
        for name, item in JSON_ITEMS.items():
            path = Path(tmp) / "body.json"
            path.write_text("[" + item * (size // len(item) - 1) + item.rstrip(",") + "]")
            used = probe(path)
            rows["json"][name] = {"bytes": used, "expansion": round(used / size, 1)}
    result = {"machine": machine_info(), "megapixels": args.megapixels, "json_mb": args.json_mb, **rows}
    write_json(args.out, result)
    for kind, table in rows.items():
        for name, row in table.items():
            print(f"{kind:6} {name:12} {row['bytes'] / 2**20:8.0f} MiB  "
                  f"{row.get('bytes_per_pixel', row.get('expansion'))}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
