"""The INT8 remedy ladder: which recipes to try, in what order, and which attempt a bundle gets.

Pure logic, no onnxruntime: a ``Recipe`` (calibration method, image count, nodes kept in float)
goes in, an ``Attempt`` (its accuracy against the budget) comes out of the caller's ``attempt``
function. ``export.int8.ptq`` runs the ladder against real images; the tests run it on fakes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterator

from export.settings import CALIBRATION_METHODS
from formats.quantization import AttemptRow


@dataclass(frozen=True)
class Recipe:
    method: str
    images: int
    excluded: tuple[str, ...] = ()


@dataclass(frozen=True)
class Attempt:
    recipe: Recipe
    top1: float
    top1_drop: float
    agreement: float
    within_budget: bool

    def row(self) -> AttemptRow:
        """The manifest's record of this attempt."""
        return AttemptRow(self.recipe.method, self.recipe.images, self.recipe.excluded, self.top1, self.top1_drop,
                          self.agreement, self.within_budget)


def run_ladder(attempt: Callable[[Recipe], Attempt], first: Recipe, available: int,
               fixed_nodes: list[str], sensitive: Callable[[Recipe], list[str]],
               max_excluded: int, remedies: bool) -> list[Attempt]:
    """Try recipes until one is within budget; returns every attempt (the last one won, if any).

    Order: the requested recipe; the other calibration methods; the best so far with twice the
    images (up to all available); the best with the first conv and classifier in float; then
    the most sensitive nodes in float as well, two more at a time, up to ``max_excluded``.
    """
    done: list[Attempt] = []

    def tried(r: Recipe) -> bool:
        return any(a.recipe == r for a in done)

    for recipe in _ladder(first, available, fixed_nodes, sensitive, max_excluded, done, remedies):
        if tried(recipe):
            continue
        done.append(attempt(recipe))
        if done[-1].within_budget:
            break
    return done


def _best(done: list[Attempt]) -> Recipe:
    return min(done, key=lambda a: (a.top1_drop, -a.agreement)).recipe


def chosen(attempts: list[Attempt]) -> Attempt:
    """The attempt a bundle gets: the one within budget (the ladder stops there), else the best one."""
    return attempts[-1] if attempts[-1].within_budget else min(attempts, key=lambda a: (a.top1_drop, -a.agreement))


def _ladder(first: Recipe, available: int, fixed_nodes: list[str], sensitive: Callable[[Recipe], list[str]],
            max_excluded: int, done: list[Attempt], remedies: bool) -> Iterator[Recipe]:
    yield first
    if not remedies:
        return
    for method in CALIBRATION_METHODS:
        yield replace(first, method=method)
    more = min(available, 2 * first.images)
    if more > first.images:
        yield replace(_best(done), images=more)
    if max_excluded == 0:
        return
    base = _best(done)
    edges = tuple(dict.fromkeys(base.excluded + tuple(fixed_nodes)))[:max_excluded]
    yield replace(base, excluded=edges)
    ranked = [n for n in sensitive(base) if n not in edges]
    for k in range(2, max_excluded - len(edges) + 1, 2):
        yield replace(base, excluded=edges + tuple(ranked[:k]))


def describe(recipe: Recipe) -> str:
    """``minmax, 300 images, all INT8`` (or ``, 2 in float``: the weighted nodes the recipe keeps in float)."""
    kept = f"{len(recipe.excluded)} in float" if recipe.excluded else "all INT8"
    return f"{recipe.method}, {recipe.images} images, {kept}"


def format_table(attempts: list[Attempt], budget: float, split: str = "", min_agreement: float = 0.0,
                 file: str = "") -> str:
    """The attempts as a table (titled by ``file``, the graph they are attempts at, when given)."""
    judged = f", judged on {split}" if split else ""
    agreement = f", agreement >= {min_agreement:g}" if min_agreement else ""
    title = f"INT8 attempts for {file}" if file else "INT8 attempts"
    lines = [f"{title} (budget: top-1 drop <= {budget:g} points{agreement}{judged})",
             "| # | method | images | kept in float | top-1 | drop (pts) | agreement | within budget |",
             "|---|---|---|---|---|---|---|---|"]
    for i, a in enumerate(attempts, 1):
        kept = ", ".join(a.recipe.excluded) or "-"
        lines.append(f"| {i} | {a.recipe.method} | {a.recipe.images} | {kept} | {100 * a.top1:.2f}% | "
                     f"{a.top1_drop:+.2f} | {a.agreement:.3f} | {'yes' if a.within_budget else 'no'} |")
    return "\n".join(lines)


def chosen_line(attempts: list[Attempt], file: str) -> str:
    """Which attempt became ``file``: the one within budget, else (``--best-effort``) the closest, marked."""
    win = chosen(attempts)
    verdict = "within budget" if win.within_budget else "the closest, over budget (kept marked: --best-effort)"
    return f"{file}: attempt {attempts.index(win) + 1} ({describe(win.recipe)}), {verdict}"
