"""Every failure a user can cause is one of these; the CLI prints it as a single line."""


class HwpruneError(Exception):
    """Base class: the message names the problem and, where possible, the fix."""


class ConfigError(HwpruneError):
    """A bad option value or combination (ratio out of range, malformed budget, ...)."""


class ModelError(HwpruneError):
    """Unknown model name, bad checkpoint, or a model that cannot be pruned."""


class DataError(HwpruneError):
    """Missing or malformed dataset."""


class PlanError(HwpruneError):
    """A pruning plan that is corrupt, foreign to the model, or out of bounds."""


class ArtifactError(HwpruneError):
    """A JSON/safetensors artifact that is missing, corrupt, or of an unknown schema version."""


class BackendUnavailable(HwpruneError):
    """A profiler backend whose hardware or package is missing."""


class TableError(HwpruneError):
    """A latency table that is corrupt, or made on another device/backend."""


class BudgetError(HwpruneError):
    """A latency budget that is malformed, already met, or impossible."""


def one_line(exc: BaseException, limit: int = 200) -> str:
    """``TypeError: message`` on one line, cut to ``limit`` characters: an error raised by the user's own code
    (a model factory, a forward pass), quoted inside the one line the CLI prints."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
