"""Option values checked where they enter, so a bad one is one line naming it before any work starts.

Every command declares its options with a ``type=`` from here: a number is finite and in its
range, a path is not empty, a location the command will write is a directory it can write in.
An option that is not given is ``None``; no value (0, "") stands for "unset", because a user who
types ``--threads 0`` means something and must hear that it is refused, not get a default.

The same :class:`Range` checks the library's own entry points (``validate_config``), so the
Python API and the CLI refuse the same values with the same words.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwprune.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """An interval of allowed values; ``None`` ends are open to infinity (values stay finite)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        if self.high is None:
            return f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
        if self.low is None:
            return f"< {self.high:g}" if self.high_open else f"<= {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def problem(self, value: float) -> str | None:
        """What is wrong with ``value`` ("must be > 0, got -1"), or None."""
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        return f"must be {self.describe()}, got {value:g}" if below or above else None

    def check(self, flag: str, value: float | None) -> None:
        """The library's form: raise ConfigError naming ``flag``; None (unset) passes."""
        if value is not None and (problem := self.problem(value)):
            raise ConfigError(f"{flag} {problem}")


ANY = Range()
POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1, low_open=True)  # a keep ratio: (0, 1]
UNIT_INTERVAL = Range(0, 1)  # a weight: [0, 1]
AT_LEAST_1 = Range(1)
REPEATS = Range(3)  # timed samples per run: fewer make a median and an IQR meaningless
MARGIN = Range(0, 0.5, high_open=True)  # the share of a budget a search keeps in reserve
SLACK = Range(0, 1, high_open=True)  # and the share under it that sends a search for a wider plan


def _argparse_check(check: Callable[[str], object]) -> Callable[[str], object]:
    """Wrap a ConfigError-raising parser as an argparse type: argparse then prefixes the option's name."""

    def parse(text: str) -> object:
        try:
            return check(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = check.__name__
    return parse


def number(allowed: Range = ANY) -> Callable[[str], object]:
    """A finite float within ``allowed`` (NaN, inf and 1e999 are refused, not passed on to break later)."""

    def finite_number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"expected a number, got {text!r}") from None
        if problem := allowed.problem(value):
            raise ConfigError(problem)
        return value

    return _argparse_check(finite_number)


def integer(allowed: Range = ANY) -> Callable[[str], object]:
    """A whole number within ``allowed`` ("1.5" is refused, not truncated)."""

    def whole_number(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"expected a whole number, got {text!r}") from None
        if problem := allowed.problem(value):
            raise ConfigError(problem)
        return value

    return _argparse_check(whole_number)


positive_int = integer(AT_LEAST_1)
non_negative_int = integer(NON_NEGATIVE)
positive_float = number(POSITIVE)
non_negative_float = number(NON_NEGATIVE)
fraction = number(FRACTION)
unit_interval = number(UNIT_INTERVAL)


def _nonempty(text: str) -> str:
    if not text.strip():
        raise ConfigError("must not be empty")
    return text


text = _argparse_check(_nonempty)
"""A name or a path that must not be empty ('' would otherwise read as unset, or as the current folder)."""


def _key_value(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"expected KEY=VALUE, got {item!r}")
    try:
        parsed = json.loads(value)  # 0.96, true, "x"; NaN too, refused by whoever takes the option
    except json.JSONDecodeError:
        parsed = value  # plain text: weights=original
    return key.strip().replace("-", "_"), parsed


key_value = _argparse_check(_key_value)
"""``KEY=VALUE`` -> (key, value): the value read as JSON where it is JSON, else as text."""


def location_problem(path: str | Path, directory: bool) -> str | None:
    """Why the command could not write ``path``, a directory or a file as ``directory`` says (None: it can).

    Missing folders on the way are created by the commands, so what must hold is that the folder
    that receives the new entries can take them: a directory that exists already (a run being
    continued or filled), else the nearest existing ancestor (files are written atomically, by a
    rename in their folder). ``os.access`` answers for the permission bits; a real probe file
    answers for everything else (a read-only mount, root without the capability to override
    permissions, ACLs).
    """
    if not str(path).strip():
        return "must not be empty"
    target = Path(path).absolute()
    try:
        ancestor = target.parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            return f"{path}: {ancestor} is a file, not a directory; choose another location"
        if directory and target.exists() and not target.is_dir():
            return f"{path} is a file: give a directory"
        if not directory and target.is_dir():
            return f"{path} is a directory: give a file name"
        receiver = target if directory and target.is_dir() else ancestor
    except OSError as exc:
        return f"{path}: cannot look into its folder ({exc.strerror})"
    if why := _unwritable(receiver):
        return f"{path}: cannot write in {receiver} ({why}); choose a writable location"
    return None


def check_out_location(path: str | Path, flag: str, directory: bool = True) -> None:
    """The library's form of :func:`location_problem`: raise ConfigError naming ``flag``."""
    if problem := location_problem(path, directory):
        raise ConfigError(f"{flag} {problem}")


def _unwritable(folder: Path) -> str | None:
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".hwprune-write-probe-")
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(probe)
    return None


def _out_dir(value: str) -> str:
    if problem := location_problem(value, directory=True):
        raise ConfigError(problem)
    return value


def _out_file(value: str) -> str:
    if problem := location_problem(value, directory=False):
        raise ConfigError(problem)
    return value


out_dir = _argparse_check(_out_dir)
"""A directory the command will create or fill: not empty, not a file, in a place it can write."""
out_file = _argparse_check(_out_file)
"""A file the command will write: not empty, not a directory, in a place it can write."""


def check_device(value: str) -> str:
    """A torch device that exists on this machine (a missing GPU is one line here, not torch's traceback)."""
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {value!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return value
    if device.type != "cuda":
        raise ConfigError(f"device {value!r} is not supported: use cpu, cuda or cuda:N")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(f"{value!r}: no CUDA GPU is usable here (torch {torch.__version__}); use --device cpu")
    if device.index is not None and device.index >= count:
        raise ConfigError(f"{value!r}: this machine has {count} CUDA GPU(s), cuda:0..cuda:{count - 1}")
    return value


torch_device = _argparse_check(check_device)


# ---- reading the command line -------------------------------------------------------------------

_NEGATIVE_VALUE = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)


def join_negative_values(argv: list[str]) -> list[str]:
    """``--budget -3ms`` -> ``--budget=-3ms``: a value that starts with a minus is still a value.

    argparse takes any token that starts with '-' and is not a plain number for an option, so
    ``--budget -3ms`` or ``--lr -inf`` read as "expected one argument" instead of reaching the
    check that says what is wrong with them. No hwprune option starts with a digit, '.', 'inf'
    or 'nan', so such a token after a long option is that option's value.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if (
            token.startswith("--")
            and token != "--"
            and "=" not in token
            and i + 1 < len(argv)
            and _NEGATIVE_VALUE.match(argv[i + 1])
        ):
            out.append(f"{token}={argv[i + 1]}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


class _Seen(argparse.Namespace):
    """A namespace on which every attribute "exists", so argparse fills in no defaults: only given options land."""

    def __getattr__(self, name: str) -> None:
        if name.startswith("_"):  # argparse's own bookkeeping attributes, and set_defaults' internals
            raise AttributeError(name)
        return None


def given_options(parser: argparse.ArgumentParser, argv: list[str]) -> dict[str, str]:
    """The options the user typed (dest -> flag as the help spells it), however abbreviated or written.

    A second parse of the same (already valid) arguments into a namespace that hides the defaults:
    an option typed with its default value still counts as given, which a comparison with the
    defaults would miss.
    """
    seen = parser.parse_args(argv, namespace=_Seen())
    flags = {a.dest: max(a.option_strings or [a.dest], key=len) for a in parser._actions}  # no public list
    return {dest: flags.get(dest, dest) for dest in vars(seen) if not dest.startswith("_")}
