"""Whether hwprune's progress bars show."""

from __future__ import annotations

import os


def bars_off(progress: bool) -> bool:
    """True when the caller asked for no bars or ``TQDM_DISABLE`` is set in the environment.

    tqdm reads that variable only for arguments a call leaves unset, and hwprune's bars always pass
    ``disable``, so it is read here: the documented way to silence a library user's logs must work.
    """
    return not progress or os.environ.get("TQDM_DISABLE", "").strip().lower() in {"1", "true", "yes", "on"}
