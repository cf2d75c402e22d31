"""The budget loop's policy, table-tested on recorded tries: no model, no device, no search.

Each case is a sequence of tries as ``tries.json`` records them (target, prediction, measurement,
budget) and the decisions the policy must take after each. Where a case comes from a recorded run
(docs/budget-loop.md tells each story), its figures are that run's.
"""

from __future__ import annotations

from typing import Any

import pytest

from hwprune.agents import Budget
from hwprune.job.policy import Decision, TryPolicy
from hwprune.job.targets import next_target
from hwprune.profilers import Measurement

MARGIN = 0.05


def tried(target: float, predicted: float, measured: float, budget_ms: float, **extra: Any) -> dict[str, Any]:
    """A try as tries.json records it, judged against an absolute budget of ``budget_ms``."""
    return {
        "target_ms": target,
        "predicted_ms": predicted,
        "measured": Measurement([measured] * 3).to_dict(),
        "unpruned_measured": None,
        "budget_ms": budget_ms,
    } | extra


def final(measured: float, budget_ms: float) -> dict[str, Any]:
    return {"measured": Measurement([measured] * 3).to_dict(), "unpruned_measured": None, "budget_ms": budget_ms}


def policy(budget_ms: float, max_tries: int = 3, margin: float = MARGIN, slack: float | None = None) -> TryPolicy:
    return TryPolicy(Budget(f"{budget_ms}ms", budget_ms), margin, 2 * margin if slack is None else slack, max_tries)


def run(p: TryPolicy, tries: list[dict[str, Any]]) -> list[Decision]:
    """The decision after each try in turn, as the loop would ask for them."""
    return [p.after_try(tries[: i + 1]) for i in range(len(tries))]


# (case, budget ms, tries as (target, predicted, measured), max_tries, expected actions, expected take of the last)
CASES = [
    ("a plan under the budget by half the margin is taken", 10.0, [(9.5, 9.4, 9.6)], 3, ["finish"], 0),
    ("a miss tightens the target", 10.0, [(9.5, 9.4, 10.4), (8.6, 8.5, 9.5)], 3, ["tighten", "finish"], 1),
    # The demo: its last plan measured 6.093 ms against 6.132, inside the reserve but under the budget.
    (
        "the last try takes a plan inside the reserve",
        6.132,
        [(6.0, 5.9, 6.5), (5.6, 5.5, 6.093)],
        2,
        ["tighten", "finish"],
        1,
    ),
    ("inside the reserve before the last try: searched again", 6.132, [(6.0, 5.9, 6.093)], 3, ["tighten"], None),
    (
        "a last try over the budget: nothing to take",
        10.0,
        [(9.5, 9.4, 10.4), (8.6, 8.5, 10.2)],
        2,
        ["tighten", "tighten"],
        None,
    ),
    # A plan at 60 % of its budget: a wider one is searched for, and taken when it clears.
    (
        "slack: a wider plan is searched, and taken",
        10.0,
        [(9.5, 9.4, 6.0), (14.0, 13.8, 9.3)],
        3,
        ["wider", "finish"],
        1,
    ),
    ("slack on the last try: taken as it is", 10.0, [(9.5, 9.4, 10.4), (8.6, 5.0, 6.0)], 2, ["tighten", "finish"], 1),
    ("slack off (0): taken as it is", 10.0, [(9.5, 5.7, 6.0)], 3, ["finish"], 0),
]


@pytest.mark.parametrize(("case", "budget", "rows", "max_tries", "actions", "take"), CASES, ids=[c[0] for c in CASES])
def test_decisions_on_recorded_tries(case, budget, rows, max_tries, actions, take) -> None:  # noqa: ANN001
    p = policy(budget, max_tries, slack=0.0 if "slack off" in case else None)
    decisions = run(p, [tried(t, pr, m, budget) for t, pr, m in rows])
    assert [d.action for d in decisions] == actions
    assert decisions[-1].take == take
    for d in decisions:
        assert (d.target_ms is not None) == d.searches


def test_a_tightened_target_scales_the_plan_by_the_observed_miss() -> None:
    d = run(policy(10.0), [tried(9.5, 9.4, 10.4, 10.0)])[0]
    assert d.target_ms == pytest.approx(next_target(9.5, 9.4, 10.0, 10.4, MARGIN))
    assert d.target_ms < 9.4 * 10.0 / 10.4


def test_a_wider_plan_that_misses_searches_between_it_and_the_kept_plan() -> None:
    """Uniform MobileNetV2 0.3x: a quarter-width plan at 61 % of the budget, the one wider plan missed;
    a plan between fit (88 %). The kept plan stays kept while the search between runs."""
    p = policy(10.0)
    tries = [tried(9.5, 9.4, 6.1, 10.0)]
    wider = p.after_try(tries)
    assert wider.action == "wider" and p.kept == 0
    tries.append(tried(wider.target_ms, 14.5, 10.6, 10.0))
    between = p.after_try(tries)
    assert between.action == "between"
    assert 9.5 < between.target_ms < wider.target_ms  # over the kept plan's target, under where the miss puts it
    assert between.target_ms == pytest.approx(next_target(wider.target_ms, 14.5, 10.0, 10.6, MARGIN))
    assert "search 1's plan" in between.message


def test_the_kept_plan_is_taken_when_nothing_lies_between() -> None:
    """The wider plan missed by so much that the target between is not over the kept plan's."""
    p = policy(10.0)
    tries = [tried(9.5, 9.4, 6.1, 10.0), tried(14.6, 14.5, 20.0, 10.0)]
    decisions = run(p, tries)
    assert [d.action for d in decisions] == ["wider", "finish"]
    assert decisions[-1].take == 0 and not decisions[-1].accept_miss and p.kept is None
    assert "no plan lies between" in decisions[-1].message


def test_on_the_last_try_the_kept_plan_is_taken_when_the_wider_one_misses() -> None:
    p = policy(10.0, max_tries=2)
    decisions = run(p, [tried(9.5, 9.4, 6.1, 10.0), tried(14.6, 14.5, 10.6, 10.0)])
    assert [d.action for d in decisions] == ["wider", "finish"]
    assert decisions[-1].take == 0 and decisions[-1].accept_miss
    assert "this was the last try" in decisions[-1].message


def test_a_looser_target_stays_under_where_an_earlier_miss_puts_the_budget() -> None:
    """Uniform ResNet-20 0.5x: a first plan missed, a second kept at 76 %; a looser target free of the
    miss found the missed plan again. Held under the miss, the slack search aims between."""
    p = policy(10.0)
    tries = [tried(9.5, 9.4, 10.4, 10.0), tried(8.6, 8.5, 5.5, 10.0)]
    tighten, wider = run(p, tries)
    assert tighten.action == "tighten" and wider.action == "wider"
    assert wider.target_ms == pytest.approx(next_target(9.5, 9.4, 10.0, 10.4, 0.0))  # the miss's own bound
    assert wider.target_ms < 9.4  # the missed plan's prediction: it cannot be found again


def test_slack_is_not_used_when_the_miss_leaves_no_room_above_the_kept_target() -> None:
    p = policy(10.0)
    tries = [tried(9.5, 9.4, 21.0, 10.0), tried(4.7, 4.6, 3.0, 10.0)]
    decisions = run(p, tries)
    assert [d.action for d in decisions] == ["tighten", "finish"]
    assert "an earlier miss puts the budget" in decisions[-1].message


def test_no_wider_search_when_the_loosened_target_is_not_over_the_old_one() -> None:
    """Uniform MobileNetV2 0.3x: a plan predicted 9.78 ms against a target of 11.19 ms measured far
    under its budget, but the loosened target (10.91) could only find the same plan again."""
    budget = 11.19 / (1 - MARGIN)
    d = run(policy(budget), [tried(11.19, 9.78, 0.84 * budget, budget)])[0]
    assert d.action == "finish" and d.take == 0


def test_a_slack_search_that_finds_the_kept_plan_again_takes_it() -> None:
    p = policy(10.0)
    tries = [tried(9.5, 9.4, 6.1, 10.0), tried(14.6, 9.4, 6.1, 10.0, same_plan_as=1)]
    decisions = run(p, tries)
    assert [d.action for d in decisions] == ["wider", "finish"]
    assert decisions[-1].take == 0 and decisions[-1].message == "" and p.kept is None


def test_a_fine_tuned_miss_tightens_from_the_newest_target() -> None:
    p = policy(10.0)
    tries = [tried(9.5, 9.0, 9.4, 10.0)]
    assert p.after_try(tries).action == "finish"
    tries[0]["final"] = final(10.3, 10.0)
    again = p.after_final_miss(tries, 0)
    assert again.action == "tighten"
    assert again.target_ms == pytest.approx(next_target(9.5, 9.0, 10.0, 10.3, MARGIN))
    assert "its fine-tuned model measured 10.300 ms" in again.message


def test_on_the_last_try_a_wider_plan_that_misses_once_fine_tuned_falls_back_to_the_kept_plan() -> None:
    """Uniform ResNet-20 0.5x: ended "not met" at 1.08x its budget while a plan at 79 % was kept aside."""
    p = policy(10.0, max_tries=2)
    tries = [tried(9.5, 9.4, 7.9, 10.0), tried(11.3, 11.0, 9.4, 10.0)]
    wider, take = run(p, tries)
    assert wider.action == "wider" and take.action == "finish" and take.take == 1
    assert not take.accept_miss  # the kept plan is the fallback
    tries[1]["final"] = final(10.8, 10.0)
    fallback = p.after_final_miss(tries, 1)
    assert fallback.action == "finish" and fallback.take == 0 and fallback.accept_miss
    assert "taking search 1's plan, kept for this" in fallback.message


def test_a_kept_plan_waits_through_a_wider_plan_whose_fine_tuned_model_missed() -> None:
    """Before the last try a wider plan that cleared but missed once fine-tuned leaves the kept plan kept:
    on the last try, a plan that does not clear gives way to it."""
    p = policy(10.0, max_tries=3)
    tries = [tried(9.5, 9.4, 7.9, 10.0), tried(11.3, 11.0, 9.4, 10.0)]
    assert [d.action for d in run(p, tries)] == ["wider", "finish"]
    tries[1]["final"] = final(10.3, 10.0)
    assert p.after_final_miss(tries, 1).action == "tighten" and p.kept == 0
    tries.append(tried(8.7, 8.4, 9.8, 10.0))  # under the budget, inside the reserve, on the last try
    last = p.after_try(tries)
    assert last.action == "finish" and last.take == 0 and last.accept_miss
