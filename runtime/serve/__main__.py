"""``python -m runtime.serve <bundle> [options]``: the options are ServeSettings' fields."""
from __future__ import annotations

from formats.cli import Positional, parser_for, settings_from
from formats.errors import run_cli
from runtime.serve.server import serve
from runtime.settings import ServeSettings

HELP = "HTTP inference server: ``python -m runtime.serve <bundle> [--host 127.0.0.1] [--port 8000]``."


def main(argv: list[str] | None = None) -> None:
    """Arguments are parsed (strictly, from ServeSettings) before the bundle is opened."""
    parser = parser_for("python -m runtime.serve", HELP, ServeSettings,
                        [Positional("bundle", "the bundle folder written by python -m export")])
    args = parser.parse_args(argv)
    run_cli(lambda: serve(args.bundle, settings_from(ServeSettings, args)))


if __name__ == "__main__":
    main()
