"""Shared by the benchmark scripts: machine load and a compact JSON print."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from hwprune.errors import HwpruneError


def load_average() -> list[float]:
    """1/5/15-minute load averages: a figure taken with load above the core count is disturbed."""
    return [round(v, 2) for v in os.getloadavg()]


def run(main: Callable[[], None], on_interrupt: str = "") -> None:
    """Run a benchmark's ``main``; Ctrl-C or an hwprune error (a bad path, a corrupt table...) ends it
    with one line (exit 130 or 2), not a traceback."""
    try:
        main()
    except HwpruneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted" + (f": {on_interrupt}" if on_interrupt else ""), file=sys.stderr)
        raise SystemExit(130) from None


def emit(summary: dict[str, Any]) -> None:
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _r(value: Any, digits: int = 3) -> Any:
    """Round floats for a readable summary; leave everything else (messages, ints) alone."""
    return round(value, digits) if isinstance(value, float) else value
