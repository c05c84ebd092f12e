"""The settings of distill's command lines (not the training config: that is ``distill.config``).

Each is a frozen dataclass whose fields become the command's options (``formats.cli``): the
comment after a field is its help; ``__post_init__`` checks the values before any work.
"""
from __future__ import annotations

from dataclasses import dataclass

from formats.errors import UserError


@dataclass(frozen=True)
class SyntheticSettings:
    """``python -m distill synthetic [ROOT]``."""

    num_classes: int = 10  # classes (bird species)
    train_per_class: int = 40  # training images per class
    test_per_class: int = 15  # test images per class
    seed: int = 0  # the images are a pure function of the seed
    min_size: int = 72  # each image's width and height are drawn from min_size..max_size pixels
    max_size: int = 128  # (see --min-size)

    def __post_init__(self) -> None:
        if self.num_classes < 2 or self.train_per_class < 2 or self.test_per_class < 1:
            raise UserError("--num-classes and --train-per-class must be >= 2, --test-per-class >= 1")
        if not 16 <= self.min_size <= self.max_size:
            raise UserError(f"--min-size and --max-size need 16 <= min <= max, got {self.min_size}, {self.max_size}")


@dataclass(frozen=True)
class CompareSettings:
    """``python -m distill compare --config C [--seeds 0,1,2]``."""

    seeds: tuple[int, ...] = (0, 1, 2)  # comma-separated training seeds (default: 0,1,2)

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"--seeds {','.join(map(str, self.seeds))!r} must name at least one seed, each once: "
                            f"e.g. --seeds 0,1,2")


def keys_help(argv: list[str]) -> str:
    """Every settable key with the value it has: the --config file's (with the overrides) when one is given
    and readable, else the defaults."""
    from distill.config import Config, load_config  # the loss terms register with it: torch
    from distill.config_parse import describe_keys, dotted_overrides

    path = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), None)
    path = path or next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if path:
        try:
            cfg = load_config(path, [a for a in dotted_overrides(argv) if "=" in a and not a.startswith("-")])
            return f"Settable keys (section.key (type) = value in {path}):\n    " + "\n    ".join(
                describe_keys(Config, values=cfg))
        except UserError:
            pass  # --help must still answer: the defaults
    return "Settable keys (section.key (type) = default):\n    " + "\n    ".join(describe_keys(Config))
