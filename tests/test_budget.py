"""Budgets: parsing, and the up-front refusal of malformed, already-met and impossible budgets."""

from __future__ import annotations

import pytest

from hwprune.agents import check_budget, min_keep_count, parse_budget
from hwprune.errors import BudgetError, HwpruneError
from hwprune.profilers import Profiler


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.5x", 5.0), ("0.25X", 2.5), (" .3x ", 3.0), ("4.2ms", 4.2), ("4.2 ms", 4.2), ("12MS", 12.0), ("1e1ms", 10.0)],
)
def test_parse_budget(text: str, expected: float) -> None:
    assert parse_budget(text, reference_ms=10.0) == pytest.approx(expected)


def test_absolute_budget_needs_no_reference() -> None:
    assert parse_budget("4.2ms", reference_ms=None) == pytest.approx(4.2)


@pytest.mark.parametrize("text", ["", "fast", "0.5", "x", "ms", "0.5 x ms", "half", "4.2s", "0.5xx", "1/2x", "nanms"])
def test_malformed_budget_is_one_line(text: str) -> None:
    with pytest.raises(BudgetError, match="malformed budget") as err:
        parse_budget(text, reference_ms=10.0)
    assert "\n" not in str(err.value) and "0.5x" in str(err.value)


@pytest.mark.parametrize("text", ["0x", "0ms", "-0.5x", "-4ms", "1e400ms"])
def test_non_positive_or_infinite_budget_is_refused(text: str) -> None:
    with pytest.raises(BudgetError, match="must be positive") as err:
        parse_budget(text, reference_ms=10.0)
    assert "\n" not in str(err.value)


def test_relative_budget_without_reference_is_refused() -> None:
    with pytest.raises(BudgetError, match="relative"):
        parse_budget("0.5x", reference_ms=None)


def test_already_met_budget_names_the_numbers() -> None:
    with pytest.raises(BudgetError, match="already met") as err:
        check_budget(budget_ms=12.0, measured_full_ms=10.0, predicted_min_ms=1.0)
    msg = str(err.value)
    assert "12.000 ms" in msg and "10.000 ms" in msg and "\n" not in msg
    with pytest.raises(BudgetError, match="already met"):
        check_budget(parse_budget("1.0x", 10.0), measured_full_ms=10.0, predicted_min_ms=1.0)


def test_impossible_budget_names_the_numbers() -> None:
    with pytest.raises(BudgetError, match="impossible") as err:
        check_budget(budget_ms=0.5, measured_full_ms=10.0, predicted_min_ms=1.25)
    msg = str(err.value)
    assert "0.500 ms" in msg and "1.250 ms" in msg and "\n" not in msg
    assert isinstance(err.value, HwpruneError)  # the CLI prints these as one line


def test_reasonable_budget_passes() -> None:
    check_budget(parse_budget("0.5x", 10.0), measured_full_ms=10.0, predicted_min_ms=1.0)


@pytest.mark.parametrize(
    ("channels", "ratio", "round_to", "expected"),
    [(16, 0.1, 1, 2), (8, 0.1, 1, 1), (64, 0.25, 1, 16), (16, 0.1, 8, 8), (6, 0.5, 8, 6)],
)
def test_min_keep_count(channels: int, ratio: float, round_to: int, expected: int) -> None:
    assert min_keep_count(channels, ratio, round_to) == expected


class _Readings:
    """A profiler that returns planted medians, in call order, for whichever model it is given."""

    warmup_s = 1.0
    warm_by_count = Profiler.warm_by_count

    def __init__(self, *medians: float) -> None:
        self.left, self.calls, self.deployed = list(medians), 0, 0
        self.warmups: list[float] = []  # the time-based warm-up each timing had

    def deploy(self, model, shape):  # noqa: ANN001, ANN201
        self.deployed += 1  # an ONNX backend exports here: once per model per judgement, not once per round
        return lambda: self.measure_model(model, shape)

    def measure_model(self, model, shape):  # noqa: ANN001, ANN201
        from hwprune.profilers import Measurement

        self.calls += 1
        self.warmups.append(self.warmup_s)
        return Measurement([self.left.pop(0)] * 3)


def _loaded(profiler: _Readings):  # noqa: ANN202
    from types import SimpleNamespace

    from torch import nn

    unpruned, shape = nn.Identity(), (1, 1, 8, 8)
    return SimpleNamespace(
        profiler=profiler, model=unpruned, input_shape=shape, timed_unpruned=profiler.deploy(unpruned, shape)
    )  # as Loaded does, once per job


def test_jobs_sharing_inputs_share_the_unpruned_start_measurement() -> None:
    """A compare's cells run on one Loaded: the unpruned model is measured at the start once, not per cell."""
    from torch import nn

    from hwprune.job import JobConfig
    from hwprune.job.measure import Loaded

    cfg = JobConfig(checkpoint="c", out="o", rounds=1, settle_s=0.0)
    readings = _Readings(30.0, 20.0)
    loaded = Loaded(nn.Identity(), None, {}, None, None, readings, (1, 1, 8, 8))  # type: ignore[arg-type]
    first, second = loaded.unpruned_at_start(cfg), loaded.unpruned_at_start(cfg)
    assert (first is second, first.median_ms, readings.calls) == (True, 30.0, 1)


def test_a_final_miss_is_measured_again_and_the_faster_kept() -> None:
    from torch import nn

    from hwprune.agents import Budget
    from hwprune.job import JobConfig
    from hwprune.job.measure import measure_final

    cfg = JobConfig(checkpoint="c", out="o", rounds=1, settle_s=0.0, max_tries=3)
    budget = Budget("10ms", 10.0)
    busy = _Readings(12.0, 11.0, 9.0)  # a busy spell, then the machine recovers
    judged, taken = measure_final(_loaded(busy), nn.Identity(), cfg, budget)
    assert (judged.measured.median_ms, judged.met, taken, busy.calls) == (9.0, True, 3, 3)
    slow = _Readings(12.0, 11.0, 13.0, 1.0)  # never under: bounded by max_tries, the miss stands
    judged, taken = measure_final(_loaded(slow), nn.Identity(), cfg, budget)
    assert (judged.measured.median_ms, judged.met, taken, slow.calls) == (11.0, False, 3, 3)
    met = _Readings(8.0, 1.0)  # under at once: one measurement
    judged, taken = measure_final(_loaded(met), nn.Identity(), cfg, budget)
    assert (judged.measured.median_ms, taken, met.calls) == (8.0, 1, 1)
    # A plan that already missed before its fine-tune (a MACs twin's): its miss is the model's, judged once.
    twin = _Readings(12.0, 9.0)
    judged, taken = measure_final(_loaded(twin), nn.Identity(), cfg, budget, tried_met=False)
    assert (judged.measured.median_ms, judged.met, taken, twin.calls) == (12.0, False, 1, 1)


def test_a_relative_budget_is_judged_against_the_unpruned_model_measured_alongside() -> None:
    from torch import nn

    from hwprune.agents import Budget
    from hwprune.job import JobConfig
    from hwprune.job.measure import measure_judged

    cfg = JobConfig(checkpoint="c", out="o", rounds=2, settle_s=0.0)
    budget = Budget.parse("0.5x", 20.0)  # fixed at the start: 10 ms
    assert (budget.ms, budget.fraction) == (10.0, 0.5)
    # The machine has slowed by a third since the start: unpruned 30/27 ms, pruned 14/13.5 ms (interleaved),
    # then a second session a little slower still.
    readings = _Readings(30.0, 14.0, 27.0, 13.5, 28.0, 13.8, 29.0, 14.0)
    judged = measure_judged(_loaded(readings), nn.Identity(), cfg, budget)
    assert readings.calls == 8  # two sessions of two rounds, each timing both models
    assert readings.deployed == 2  # ... each model deployed (exported) once for all of them
    assert judged.unpruned is not None and judged.unpruned.median_ms == 27.0  # the faster of each model kept
    assert (judged.measured.median_ms, judged.budget_ms, judged.met) == (13.5, 13.5, True)
    # One session alone would pass this plan (8.4 <= 9.0); the second reads the unpruned model faster: a miss.
    readings = _Readings(18.0, 8.4, 18.2, 8.5, 15.4, 8.6, 15.6, 8.5)
    judged = measure_judged(_loaded(readings), nn.Identity(), cfg, budget)
    assert (judged.measured.median_ms, judged.budget_ms, judged.met) == (8.4, 7.7, False)
    # An absolute budget has no reference: only the pruned model is measured, once, against the fixed ms.
    readings = _Readings(14.0, 13.5)
    judged = measure_judged(_loaded(readings), nn.Identity(), cfg, Budget.parse("10ms", None))
    assert (readings.calls, judged.unpruned, judged.budget_ms, judged.met) == (2, None, 10.0, False)
    # A miss measured again keeps the faster of each model and recomputes the budget from the faster unpruned.
    again = measure_judged(
        _loaded(_Readings(26.0, 13.4, 29.0, 13.0, 28.0, 13.9, 30.0, 13.6)), nn.Identity(), cfg, budget
    )
    merged = measure_judged(_loaded(_Readings(*[30.0, 14.0] * 4)), nn.Identity(), cfg, budget).merge(again)
    assert (merged.unpruned.median_ms, merged.measured.median_ms, merged.budget_ms) == (26.0, 13.0, 13.0)


@pytest.mark.parametrize(
    ("measured_ms", "needed"),
    [(5.9, False), (6.0, False), (6.1, True), (9.9, True), (10.0, True), (13.9, True), (14.0, False), (25.0, False)],
)
def test_a_second_session_is_taken_unless_the_first_is_decisive(measured_ms: float, needed: bool) -> None:
    """Against a 10 ms budget: a pass at 60 % of it or less, or a miss by 40 % or more, stands on one session."""
    from hwprune.job.measure import second_session_needed

    assert second_session_needed(measured_ms, 10.0) is needed


def test_a_decisive_first_session_is_the_verdict() -> None:
    from torch import nn

    from hwprune.agents import Budget
    from hwprune.job import JobConfig
    from hwprune.job.measure import measure_judged

    cfg = JobConfig(checkpoint="c", out="o", rounds=2, settle_s=0.0)
    budget = Budget.parse("0.5x", 20.0)
    # A MACs twin at 1.9x its budget: one session of two rounds, its miss stands.
    twin = _Readings(30.0, 28.5, 29.5, 28.0, 30.0, 20.0, 30.0, 20.0)
    judged = measure_judged(_loaded(twin), nn.Identity(), cfg, budget)
    assert (twin.calls, judged.measured.median_ms, judged.budget_ms, judged.met) == (4, 28.0, 14.75, False)
    # A plan at 96 % of its budget gets its second session.
    close = _Readings(30.0, 14.5, 29.5, 14.2, 30.0, 14.0, 30.0, 14.1)
    judged = measure_judged(_loaded(close), nn.Identity(), cfg, budget)
    assert (close.calls, judged.measured.median_ms, judged.budget_ms) == (8, 14.0, 14.75)


def test_a_verdict_settles_and_warms_up_by_time_once_per_session_after_other_work(monkeypatch) -> None:
    """Idle and a timed warm-up are for timings that follow other work (a fine-tune); a timing that follows
    another timing warms up by count alone, and the second session follows the first without idling."""
    from torch import nn

    from hwprune.agents import Budget
    from hwprune.job import JobConfig, measure

    slept: list[float] = []
    monkeypatch.setattr(measure.time, "sleep", slept.append)
    cfg = JobConfig(checkpoint="c", out="o", rounds=2, settle_s=3.0)
    readings = _Readings(*[20.0, 9.0] * 4)
    measure.measure_judged(_loaded(readings), nn.Identity(), cfg, Budget.parse("0.5x", 20.0))
    assert slept == [3.0] and readings.warmups == [1.0, 0.0, 0.0, 0.0] * 2 and readings.warmup_s == 1.0


def test_budget_fraction() -> None:
    from hwprune.agents import budget_fraction

    assert budget_fraction("0.5x") == 0.5
    assert budget_fraction(" 4.2 ms") is None
