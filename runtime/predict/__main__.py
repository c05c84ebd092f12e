"""``python -m runtime.predict <bundle> <image>... [options]``: the options are PredictSettings' fields."""
from __future__ import annotations

import json

from formats.cli import Positional, parser_for, settings_from
from formats.errors import run_cli
from runtime.predict import format_text, predict_files
from runtime.settings import PredictSettings

HELP = "Classify images with a bundle: ``python -m runtime.predict <bundle> <image>... [--top-k 5] [--json]``."


def main(argv: list[str] | None = None) -> None:
    """Arguments are parsed (strictly, from PredictSettings) before the bundle is opened."""
    parser = parser_for("python -m runtime.predict", HELP, PredictSettings,
                        [Positional("bundle", "the bundle folder written by python -m export"),
                         Positional("images", "image files to classify", nargs="+")])
    args = parser.parse_args(argv)

    def go() -> None:
        settings = settings_from(PredictSettings, args)
        results = predict_files(args.bundle, args.images, settings.top_k, settings.backend, settings.artifact,
                                settings.decode, settings.bench, settings.verbose)
        print(json.dumps(results, indent=2) if settings.json else format_text(results))
    run_cli(go)


if __name__ == "__main__":
    main()
