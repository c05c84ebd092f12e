"""The results page: students, export formats, INT8 across instruction sets, quantization-aware training."""
from __future__ import annotations

from typing import Any

from benchmarks.page.core import Results, ms, pct, points, pts, px, ratio, seeds, table


STUDENTS = {"students_imagenet.json": "--imagenet --students resnet18,timm:mobilenetv4_conv_small",
            "students_200.json": "--per-class 200 --students resnet18,timm:mobilenetv4_conv_small"}


def section_students(res: Results) -> list[str] | None:
    if not res.present(STUDENTS):
        return None
    out = ["## Students: accuracy and INT8 latency", "",
           "Accuracy: the real-teacher setup above, the shipped recipe, final epoch, students from scratch unless "
           "marked ImageNet. Latency: SingleStream p50 at batch 1 (`runtime.bench`, onnxruntime on the CPU) of each "
           "student's seed-0 bundle at its training size, and of the same weights exported for a larger input "
           "(latency only); speed-ups against ResNet-18 INT8 in the same run. \"INT8 top-1\": the seed-0 INT8 model "
           "on the test images."]
    for name, args, d in res.present(STUDENTS):
        out += ["", f"### {d['per_class']} training images per class, {d['epochs']} epochs", "",
                res.source(name, f"python benchmarks/students.py {args} --out benchmarks/results/{name}"), "",
                f"Setup: {d['setup']}; seeds {seeds(d['seeds'])}.", ""]
        out += students_table(d)
    return out


def students_table(d: dict[str, Any]) -> list[str]:
    sizes = [k for k in ("64px", "224px") if k in d]
    lat = {size: {r["student"]: r for r in d[size]} for size in sizes}
    ref = d["accuracy"].get("resnet18", {}).get("test_top1_mean")
    rows = []
    for arch, acc in d["accuracy"].items():
        init = "ImageNet" if arch in d.get("imagenet_initialised", []) else "scratch"
        vs = pts(acc["test_top1_mean"] - ref) if ref is not None and arch != "resnet18" else ""
        cells = [arch, init, f"{pct(acc['test_top1_mean'])} ± {pct(acc['test_top1_std'])}", vs,
                 pct(lat[sizes[0]][arch]["int8_top1_export"], 1)]
        for size in sizes:
            r = lat[size][arch]
            cells += [ms(r["fp32_p50_ms"]), ms(r["int8_p50_ms"]), ratio(r["int8_speedup_vs_resnet18_int8"])]
        rows.append(cells)
    header = ["student", "init", "test top-1", "vs ResNet-18", f"INT8 top-1 ({px(sizes[0])})"]
    header += [h for size in sizes for h in (f"FP32 {px(size)}", f"INT8 {px(size)}", "INT8 × ResNet-18")]
    return table(header, rows)


FORMATS = {"export_formats.json": "python benchmarks/export_formats.py",
           "export_formats_gpu_host.json": "bash benchmarks/gpu_check.sh"}


def section_formats(res: Results) -> list[str] | None:
    if not res.present(FORMATS):
        return None
    out = ["## Export formats on a CPU", "",
           "PyTorch eager against onnxruntime FP32 and onnxruntime INT8 (`model.int8.onnx`, U8S8), one process, "
           "threads pinned to the machine's cores: median latency at batch 1 and 32 after warm-up. The student is "
           "trained by the script on the synthetic birds, an easy task: the top-1 column shows that no format lost "
           "accuracy, not what a real dataset gives."]
    for name, command, d in res.present(FORMATS):
        lat, fp32 = d["latency"], d["latency"]["onnxruntime-fp32"]
        recipe = d["int8_recipe"]
        out += ["", res.source(name, command), "",
                f"{d['arch']} at {d['input_size']}×{d['input_size']}, trained {d['train_epochs']} epochs; top-1 on "
                f"{d['eval']['images']} test images; INT8: {recipe['method']}, {recipe['calibration_images']} "
                f"calibration images, {recipe['remedies_needed']} remedies; {d['threads']} threads.", ""]
        rows = [[fmt, pct(d["top1"][fmt]) + "%", ms(lat[fmt]["1"]["median_ms"]),
                 ratio(lat[fmt]["1"]["median_ms"] / fp32["1"]["median_ms"]), ms(lat[fmt]["32"]["median_ms"]),
                 ratio(lat[fmt]["32"]["median_ms"] / fp32["32"]["median_ms"])] for fmt in lat]
        out += table(["format", "top-1", "batch 1", "vs ORT FP32", "batch 32", "vs ORT FP32"], rows)
    return out


def section_int8_isa(res: Results) -> list[str] | None:
    d = res.get("int8_isa.json")
    if d is None:
        return None
    out = ["## INT8 on every x86 CPU: 7-bit weights", "",
           res.source("int8_isa.json", "python benchmarks/int8_isa.py --avx2 --qat"), "",
           f"Students trained from scratch (cross-entropy only, {d['epochs']} epochs, {d['per_class']} Fashion-MNIST "
           "images per class); one calibration quantized with 8-bit and with 7-bit CPU weights; onnxruntime's "
           "fused kernels; drop against FP32 in points with its paired 95% interval. \"AVX2\": the same graphs under "
           "QEMU presenting an AVX2-only CPU (`benchmarks/avx2_emulated.sh`), compared with this CPU. \"Worst pair "
           f"sum\": the largest int16 pair sum the weights allow (the limit is "
           f"{d['rows'][0]['accuracy']['7-bit']['saturation']['limit']:,}).", ""]
    rows = []
    for r in d["rows"]:
        acc, avx2 = r["accuracy"], r["avx2"]
        for i, bits in enumerate(("8-bit", "7-bit")):
            a, e = acc[bits], avx2[bits]
            rows.append([r["student"] if i == 0 else "", pct(acc["fp32_top1"]) + "%" if i == 0 else "", bits,
                         points(a), f"{a['agreement']:.4f}",
                         f"{a['saturation']['worst_pair_sum']:,}", f"{e['top1_agreement_with_this_cpu']:.3f}",
                         f"{e['max_abs_logit_diff']:.2f}", *(ms(r[k][f"{bits}_ms"]) for k in latency_keys(r))])
    out += table(["student", "FP32 top-1", "CPU weights", "INT8 drop (points, 95%)", "agreement", "worst pair sum",
                  "AVX2 vs this CPU: top-1 agreement", "max logit diff",
                  *(f"p50 {k[8:]} px" for k in latency_keys(d["rows"][0]))], rows)
    images = {r["accuracy"]["images"] for r in d["rows"]} | {r["avx2"]["images"] for r in d["rows"]}
    out += ["", f"Images: {', '.join(f'{n:,}' for n in sorted(images, reverse=True))} (accuracy on this CPU, AVX2). "
            "7-bit / 8-bit latency at batch 1 (median of per-round ratios): " +
            "; ".join(f"{r['student']} " + ", ".join(f"{r[k]['7bit_over_8bit']:.2f} ({k[8:]} px)"
                                                       for k in latency_keys(r)) for r in d["rows"]) + "."]
    return out + int8_isa_qat(d)


def latency_keys(row: dict[str, Any]) -> list[str]:
    return [k for k in row if k.startswith("latency_")]


def int8_isa_qat(d: dict[str, Any]) -> list[str]:
    rows = []
    for r in d["rows"]:
        q = r.get("qat") or {}
        for flavour in ("model.int8.onnx", "model.int8.trt.onnx"):
            if flavour not in q:
                continue
            f = q[flavour]
            p, t = f["ptq_vs_qat"]["ptq"], f["ptq_vs_qat"]["qat"]
            rows.append([r["student"], f"`{flavour}`", f"{f['fidelity']['agreement']:.3f}",
                         points(p), points(t)])
    if not rows:
        return []
    kernels = {r["qat"].get("torch_kernels") for r in d["rows"] if r.get("qat")}
    return ["", f"`python -m export.qat` with torch's {', '.join(sorted(kernels))} kernels: torch-vs-deployment "
            "fidelity and the top-1 drop on test, post-training against QAT:", ""] + \
        table(["student", "graph", "fidelity", "post-training drop", "QAT drop"], rows)


QAT = {"qat_test10k.json": "timm:mobilenetv3_small_100,timm:ghostnet_100,timm:repvit_m0_9,timm:fastvit_t8",
       "qat_test10k_b.json": "timm:convnext_atto,timm:efficientnet_lite0,timm:mobilenetv4_conv_small",
       "qat_test10k_select.json": "timm:mobilenetv3_small_100,timm:efficientnet_lite0,timm:fastvit_t8"}


def section_qat(res: Results) -> list[str] | None:
    present = [n for n in QAT if res.get(n)]
    if not present:
        return None
    out = ["## Post-training INT8 and quantization-aware training", ""]
    rows: dict[str, tuple[str, dict[str, Any]]] = {}
    for name in present:  # a later file's row replaces an earlier one of the same student
        out.append(res.source(name, f"python benchmarks/qat.py --students {QAT[name]} --out benchmarks/results/{name}"))
        rows.update({r["student"]: (name, r) for r in res.data[name]["rows"]})
    images = sorted({res.data[n].get("test_images") for n in present} - {None})
    student_seeds = ",".join(sorted({str(r["seed"]) for _, r in rows.values()}))
    out += ["", f"Students of the students benchmark above (seed {student_seeds}), each exported three ways and "
            f"scored against its own FP32 top-1 on {', '.join(f'{n:,}' for n in images)} test images: drop in points "
            "± its paired 95% interval / top-1 agreement with FP32. Post-training: one calibration, every node INT8; "
            "ladder: `--int8` as shipped (nodes kept in float in brackets); QAT: `python -m export.qat`, then "
            "`--int8 --qat`. U8S8 is the CPU graph, S8S8 the TensorRT graph scored by its Q/DQ reference semantics. "
            "These CPU graphs had 8-bit weights; the 7-bit graphs export writes now are compared with them above.", ""]
    body = []
    for student, (name, r) in rows.items():
        chosen = r["qat_record"]["selected_on"]
        for i, (key, flavour) in enumerate((("u8s8", "U8S8"), ("s8s8", "S8S8"))):
            ladder = r["ptq-ladder"][key]
            body.append([student if i == 0 else "", flavour, pct(r["ptq"]["fp32_top1"]) + "%" if i == 0 else "",
                         drop(r["ptq"][key]), f"{drop(ladder)} ({ladder['nodes_in_float']})", drop(r["qat"][key]),
                         f"{chosen['split']}, {chosen['images']} images" if i == 0 else "",
                         f"`{name}`" if i == 0 else ""])
    return out + table(["student", "graph", "FP32 top-1", "post-training", "ladder", "QAT", "QAT epoch chosen on",
                        "file"], body)


def drop(a: dict[str, Any]) -> str:
    return f"{points(a)} / {a['agreement']:.3f}"
