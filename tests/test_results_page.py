"""docs/results.md is what benchmarks/results_page.py makes of benchmarks/results/*.json, and it shows them all."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from benchmarks import results_page
from benchmarks.results_page import PAGE, SUPERSEDED, Results, build, render, slug, unaccounted

REPO = Path(__file__).resolve().parents[1]


def _git_history() -> bool:
    """The page's dates come from the commits of the result files: they need the full history."""
    try:
        out = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return False
    return out == "false"


@pytest.mark.skipif(not _git_history(), reason="the page's dates need the git history of benchmarks/results")
def test_page_is_up_to_date() -> None:
    assert PAGE.read_text() == render(), "docs/results.md is stale: run python benchmarks/results_page.py"


def test_every_current_result_is_on_the_page() -> None:
    res = Results.load()
    _, used = build(res)
    missing = unaccounted(res, used)
    assert not missing, (f"{missing}: rendered nowhere; add a renderer to benchmarks/results_page.py, or list the "
                         "file in SUPERSEDED if its figures are history")
    assert not used & set(SUPERSEDED), "a file listed as superseded is still rendered"


def test_superseded_list_names_only_result_files() -> None:
    assert all(re.fullmatch(r"[a-z0-9_]+\.json", name) for name in SUPERSEDED)


def test_no_hand_typed_page() -> None:
    """Every figure on the page is in its JSON: the page changes when a JSON does."""
    res = Results.load()
    name = "kd_overhead.json"
    before, _ = build(Results(dict(res.data), res.dates))
    changed = {**res.data, name: {**res.data[name], "results": [
        {**r, "ratio_cached_vs_baseline": 9.87} for r in res.data[name]["results"]]}}
    after, _ = build(Results(changed, res.dates))
    assert "9.87×" in after and "9.87×" not in before


def test_readme_links_and_figures_match_the_page() -> None:
    """The README's links into docs/results.md name real sections, and its headline figures are on the page."""
    readme, page = (REPO / "README.md").read_text(), PAGE.read_text()
    anchors = {slug(line.lstrip("#").strip()) for line in page.splitlines() if line.startswith("#")}
    links = re.findall(r"docs/results\.md#([\w-]+)", readme)
    assert links, "the README links its headline figures to docs/results.md"
    assert set(links) <= anchors, f"dead links: {set(links) - anchors}"
    figures = readme.split("## Measured", 1)[1].split("\n## ", 1)[0]
    for number in re.findall(r"[+-]?\d+\.\d+", figures):
        assert number in page, f"the README's {number} is not on docs/results.md"


POOL_ARM = {"test_top1": {"mean": 0.8, "std": 0.01, "n": 2}, "val_top1": {"mean": 0.7, "std": 0.0, "n": 2},
            "wall_s": {"mean": 10.0, "std": 0.0, "n": 2}, "epoch_s": {"mean": 1.0, "std": 0.0, "n": 2},
            "images_per_s": 120.0}
DIFF = {"diff_to_baseline": {"mean": 0.0123, "std": 0.004, "n": 2, "per_seed": {"0": 0.01, "1": 0.015}},
        "epoch_s_ratio_to_baseline": 1.0}
POOL = {"images": 5000, "listed": False, "dropped_val_test_copies": 0, "labels": "folders"}


def _kd_pool(with_latency: bool) -> dict:
    """The layout benchmarks/kd_pool.py writes (a run killed before the latency step has no "latency")."""
    arms = {"baseline": POOL_ARM, "kd": {**POOL_ARM, **DIFF}, "kd+unlabeled": {**POOL_ARM, **DIFF, "pool": POOL},
            "no-labels": {**POOL_ARM, **DIFF, "pool": POOL, "teacher_zero_shot_test_top1": 0.24,
                          "agreement_with_teacher": {"mean": 0.3, "std": 0.01}}}
    out = {"machine": {"summary": "2-core test CPU"}, "seeds": [0, 1], "epochs": 40, "pool_epochs": 5,
           "setup": "kd_gain 30 labeled images per class", "cache_build_s": 60.0,
           "teacher": {"zero_shot_test_top1": 0.242, "calibrated_test_top1": 0.796, "calibration_strength": 0.3,
                       "calibration_s": 2.0, "linear_probe_test_top1": 0.789, "test_images": 1000},
           "cache": {"labeled": {"images": 240, "views": 16, "seconds": 30.0, "views_per_s": 128.0},
                     "unlabeled": {"images": 5000, "views": 1, "seconds": 40.0, "views_per_s": 125.0}},
           "students": {"resnet18": {"seeds": [0, 1], "baseline": "baseline", "cache_build_s": 0.0, "arms": arms,
                                     "seed0_kd_unlabeled": "runs/best.pt"}}}
    if with_latency:
        row = {"student": "resnet18", "fp32_p50_ms": 1.7, "int8_p50_ms": 0.7, "int8_speedup_vs_resnet18_int8": 1.0,
               "int8_top1_export": 0.8}
        out["latency"] = {"64px": [row], "224px": [row]}
    return out


KD_POOL_RECIPE = {"machine": {"summary": "2-core test CPU"}, "seed": 0, "chosen_on": "dev_top1", "wall_s": 1.0,
                  "runs": [
    {"variant": "pilot-resnet18-e3-", "pool_epochs": 3, "overrides": {}, "dev_top1": 0.761, "test_top1": 0.77,
     "val_top1": 0.7, "epoch_s": 20.0},
    {"variant": "pilot-resnet18-e3-method.temperature1", "pool_epochs": 3, "overrides": {"method.temperature": 1.0},
     "dev_top1": 0.7789, "test_top1": 0.78, "val_top1": 0.7, "epoch_s": 21.0}]}


@pytest.mark.parametrize("with_latency", [True, False])
def test_pool_results_render_when_present(with_latency: bool) -> None:
    res = Results.load()
    data = {**res.data, "kd_pool.json": _kd_pool(with_latency), "kd_pool_recipe.json": KD_POOL_RECIPE}
    page, used = build(Results(data, {**res.dates, "kd_pool.json": "2030-01-02"}))
    assert {"kd_pool.json", "kd_pool_recipe.json"} <= used
    section = page.split("## Distillation from unlabeled images", 1)[1].split("\n## ", 1)[0]
    assert "+1.23 ± 0.40" in section and "2-core test CPU · 2030-01-02" in section
    assert "**77.89**" in section and "`method.temperature=1.0`" in section  # the best variant on dev, in bold
    assert ("INT8 × ResNet-18" in section) == with_latency


def test_pool_results_are_skipped_when_absent() -> None:
    res = Results.load()
    data = {k: v for k, v in res.data.items() if not k.startswith("kd_pool")}
    page, used = build(Results(data, res.dates))
    assert "unlabeled images" not in page and not any(n.startswith("kd_pool") for n in used)


def test_check_mode_fails_on_a_stale_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    stale = tmp_path / "results.md"
    stale.write_text("# an old page\n")
    monkeypatch.setattr(results_page, "PAGE", stale)
    monkeypatch.setattr(results_page, "REPO", tmp_path)
    assert results_page.main(["--check"]) == 1
    assert "python benchmarks/results_page.py" in capsys.readouterr().err
    assert stale.read_text() == "# an old page\n"  # --check never writes
