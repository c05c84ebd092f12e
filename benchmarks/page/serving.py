"""The results page: the server under load and its memory per request."""
from __future__ import annotations

from typing import Any

from benchmarks.page.core import Results, ratio, table


# --- serving -------------------------------------------------------------------------------------


def section_serve(res: Results) -> list[str] | None:
    names = [n for n in ("serve_load_64.json", "serve_load_224.json") if res.get(n)]
    if not names:
        return None
    out, rows, notes = ["## Serving", ""], [], []
    for name in names:
        d = res.data[name]
        out.append(res.source(name, f"python benchmarks/serve_load.py {d['bundle']} --artifact "
                                    f"{d['in_process']['artifact']} --out benchmarks/results/{name}"))
        rows += serve_rows(d)
        cold = d["cold_start_s"]
        notes.append(f"- {input_size(d)}: cold start (process start to the first answer) {cold['median']:.2f} s, "
                     f"median of {len(cold['runs'])}; JPEG draft decoding: {d['jpeg_draft_parity']['reason']}")
    d = res.data[names[0]]
    requests = d["decodes"][0]["load"][0]["requests"]
    out += ["", f"The bundle's `{d['in_process']['artifact']}` behind `runtime.serve` (`--max-batch "
            f"{d['server']['max_batch']} --max-delay-ms {d['server']['max_delay_ms']:g}`), one {d['payload']} JPEG of "
            f"{d['payload_bytes']:,} bytes per request, {requests} requests per level from an asyncio client on the "
            f"same cores, levels interleaved over {d['rounds']} rounds, the median round. References in-process: the "
            "model alone (ready float32 batch) and the full pipeline (decode + preprocess + model, one decoding "
            "thread), best batch of each; images/s.", ""]
    out += table(["input", "decoding", "decode + preprocess", "model alone", "full pipeline", "concurrency",
                  "server", "× full pipeline", "p50 / p99 ms"], rows)
    return out + ["", *notes] + serve_memory(res)


def input_size(d: dict[str, Any]) -> str:
    return "×".join(map(str, d["input_size"]))


def serve_rows(d: dict[str, Any]) -> list[list[str]]:
    """One row per decoding and concurrency; the references only on each decoding's first row."""
    rows = []
    for dec in d["decodes"]:
        head = [input_size(d), dec["decode"], f"{dec['decode_preprocess_ms']:.2f} ms",
                f"{d['in_process']['best_fps']:,.0f}", f"{dec['pipeline']['best_fps']:,.0f}"]
        for i, load in enumerate(dec["load"]):
            rows.append([*(head if i == 0 else [""] * len(head)), str(load["concurrency"]),
                         f"{load['images_per_s']:,.0f}", ratio(load["ratio_to_pipeline"]),
                         f"{load['p50_ms']:.1f} / {load['p99_ms']:.1f}"])
    return rows


MODES = {"F": "float32 TIFF", "I": "int32 TIFF", "RGBA": "RGBA PNG", "RGB": "RGB PNG", "L": "grayscale PNG"}


def serve_memory(res: Results) -> list[str]:
    d = res.get("serve_memory.json")
    if d is None:
        return []
    decode = ", ".join(f"{MODES.get(k, k)} {v['bytes_per_pixel']:.2f}" for k, v in d["decode"].items())
    parse = ", ".join(f"`{k}` {v['expansion']:.1f}×" for k, v in d["json"].items())
    return ["", "### Memory per request", "", res.source("serve_memory.json", "python benchmarks/serve_memory.py"), "",
            f"Peak resident memory of one decode of a {d['megapixels']:g}-megapixel image through the runtime's decode "
            f"path, in bytes per pixel: {decode}. One {d['json_mb']:g} MB KServe JSON body through `json.loads`, "
            f"memory per byte of body: {parse}. `runtime.serve` prints its memory bound from these "
            "(docs/runtime.md)."]
