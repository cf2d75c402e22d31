"""The ``hwprune`` command: one sub-command per verb; each lives in ``hwprune.commands``.

The CLI is thin: parse, call the library, print. Every ``HwpruneError`` becomes one line on
stderr and exit status 2, and so does every usage error (a bad option value is refused by its
``type=`` from ``hwprune.options`` while parsing, before any work); Ctrl-C exits 130 after the
command has saved what it had. ``main`` returns the exit status (it does not raise SystemExit).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
import warnings
from collections.abc import Iterator
from typing import NoReturn

from hwprune import __version__
from hwprune.errors import HwpruneError
from hwprune.options import given_options, join_negative_values

# verb -> module in hwprune.commands exposing HELP, add_arguments(parser) and run(args) -> int.
COMMANDS = {
    "train": "train",
    "import": "import_",
    "prune": "prune",
    "profile": "profile",
    "lut-check": "lut_check",
    "sensitivity": "sensitivity",
    "compare": "compare",
    "export": "export",
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults, and keep each command's docstring laid out as written (its examples stay on one line)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # "(default: None)" / "(default: False)" / "(default: [])" say nothing: the help says what unset means.
        if action.default in (None, False, []) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """A usage error is one line naming the problem and where to look, like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hwprune",
        description="Hardware-aware structured pruning: profile a device, prune a CNN to a latency "
        "budget measured on it, fine-tune, measure and report.",
    )
    parser.add_argument("--version", action="version", version=f"hwprune {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for verb, module_name in COMMANDS.items():
        module = importlib.import_module(f"hwprune.commands.{module_name}")
        p = sub.add_parser(
            verb,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=_HelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _parser=p)
    return parser


def _one_line_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> str:
    """Warnings (e.g. an unstable timing) read as one line, like errors, without a source excerpt."""
    return f"hwprune: warning: {message}\n"


class _StdoutLines(logging.Handler):
    """A log record as a plain line on the *current* stdout (tests swap sys.stdout between runs)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 - logging's own rule: a failing handler never breaks the command
            self.handleError(record)


SHOWN_LOGGERS = ("hwprune.job", "hwprune.compare")
"""Library loggers whose INFO lines the CLI prints: the prune job's progress (searches, measurements, verdict)
and a compare's cell by cell.

Everything else (an agent's resume notes, the Python API's own lines) stays at logging's defaults: a
warning reaches stderr, info is silent, as a library user who configured nothing would see it.
"""


@contextlib.contextmanager
def _progress_lines() -> Iterator[None]:
    """Show the job's progress lines on stdout for the length of one command, then leave logging as it was."""
    handler = _StdoutLines()
    loggers = [logging.getLogger(name) for name in SHOWN_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def main(argv: list[str] | None = None) -> int:
    argv = join_negative_values(list(sys.argv[1:] if argv is None else argv))
    try:
        args = build_parser().parse_args(argv)
        # What the user typed, defaults aside: `prune --resume` refuses options a resumed run would ignore.
        args.given = given_options(args._parser, argv[argv.index(args.command) + 1 :])
    except SystemExit as exc:  # a usage error (one line, see _Parser.error), --help or --version
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None) * 2
    warnings.formatwarning = _one_line_warning
    try:
        with _progress_lines():
            return int(args._run(args) or 0)
    except HwpruneError as exc:
        print(f"hwprune {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hwprune {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
