"""formats.progress: the one progress helper of every long step (log lines here, a bar on a terminal)."""
from __future__ import annotations

import io

import pytest

from formats.progress import duration, stage


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_start_line_rate_and_eta_lines_and_an_end_line() -> None:
    out = io.StringIO()
    with stage("teacher cache", total=4, unit="view", stream=out, every_s=0.0) as step:
        step.advance(1)
        step.note("shard 1 of 2 saved")
        step.advance(3)
    lines = out.getvalue().splitlines()
    assert lines[0] == "teacher cache: started (4 views)"
    assert lines[1].startswith("teacher cache: 1/4 views, ") and "left" in lines[1]
    assert lines[2] == "teacher cache: shard 1 of 2 saved"
    assert lines[3].startswith("teacher cache: 4/4 views, ")
    assert lines[-1].startswith("teacher cache: done, 4 views in ")


def test_lines_are_spaced_by_every_s_so_a_log_is_not_flooded() -> None:
    out = io.StringIO()
    with stage("epoch", total=1000, stream=out, every_s=3600.0) as step:
        for _ in range(1000):
            step.advance()
    assert len(out.getvalue().splitlines()) == 2  # started, done


def test_a_failure_ends_the_stage_with_stopped_after_and_propagates() -> None:
    out = io.StringIO()
    with pytest.raises(ValueError, match="boom"):
        with stage("export ladder", stream=out) as step:
            step.advance(2)
            raise ValueError("boom")
    assert out.getvalue().splitlines()[-1].startswith("export ladder: stopped after 2 items in ")


def test_a_terminal_gets_a_tqdm_bar_and_still_the_closing_line() -> None:
    out = Terminal()
    with stage("bench", total=3, unit="artifact", stream=out) as step:
        step.advance(3)
    text = out.getvalue()
    assert "0/3" in text and "artifact/s" in text  # tqdm's own bar (it redraws at most 10 times a second)
    assert "bench: started" not in text  # the bar replaces the log lines
    assert text.rstrip().splitlines()[-1].startswith("bench: done, 3 artifacts in ")


def test_show_false_counts_without_printing() -> None:
    out = io.StringIO()
    with stage("rank 1 cache", total=2, stream=out, every_s=0.0, show=False) as step:
        step.advance(2)
    assert out.getvalue() == "" and step.done == 2


def test_vl2lite_progress_0_silences_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VL2LITE_PROGRESS", "0")
    out = io.StringIO()
    with stage("qat", total=2, stream=out, every_s=0.0) as step:
        step.advance(2)
        step.note("x")
    assert out.getvalue() == "" and step.done == 2


@pytest.mark.parametrize("seconds,text", [(0.4, "0 s"), (42, "42 s"), (185, "3 min 05 s"), (3720, "1 h 02 min")])
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text
