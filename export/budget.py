"""The one outcome of an accuracy-budget miss: no bundle (exit 3, with the table), or with
``--best-effort`` the artifact kept and marked."""
from __future__ import annotations

from typing import Sequence

from export.job import log
from export.settings import ExportOptions
from formats.errors import UserError
from formats.manifest import ArtifactEntry


class BudgetError(UserError):
    """An artifact missed the accuracy budget; ``detail`` is the table of attempts or verdicts, printed
    before the error line; the command exits 3."""

    exit_status = 3

    def __init__(self, message: str, table: str) -> None:
        super().__init__(message)
        self.detail = table


def enforce_budget(artifacts: Sequence[ArtifactEntry], options: ExportOptions) -> None:
    """Raise ``BudgetError`` for an artifact over the budget, unless --best-effort keeps it, with a warning."""
    over = [a for a in artifacts if a.within_budget is False]
    if not over:
        return
    names = ", ".join(a.file for a in over)
    if options.best_effort:
        log(f"WARNING: {names} missed the accuracy budget; --best-effort keeps them, marked within_budget: false "
            f"(runtime predict and serve skip them unless named with --artifact)")
        return
    raise BudgetError(f"{names} missed the accuracy budget (max top-1 drop {options.max_top1_drop:g} points"
                      f"{f', min agreement {options.min_agreement:g}' if options.min_agreement else ''}); "
                      f"no bundle was written: raise --max-top1-drop, leave that precision out, or pass "
                      f"--best-effort to keep it marked", verdict_table(artifacts, options))


def verdict_table(artifacts: Sequence[ArtifactEntry], options: ExportOptions) -> str:
    agreement = f", agreement >= {options.min_agreement:g}" if options.min_agreement else ""
    lines = [f"accuracy budget: top-1 drop <= {options.max_top1_drop:g} points{agreement}",
             "| artifact | judged on | images | drop (pts) | agreement | within budget |", "|---|---|---|---|---|---|"]
    for a in artifacts:
        v = a.budget
        if v is not None:
            lines.append(f"| {a.file} | {v.split} | {v.images} | {v.top1_drop:+.2f} | {v.agreement:.3f} | "
                         f"{'yes' if v.within_budget else 'no'} |")
    return "\n".join(lines)
