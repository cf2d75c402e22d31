"""What the budget loop does after each measured try: a small, pure policy over the recorded tries.

A try is a search against a target, its plan measured on the device. After it the policy decides
one of four things (docs/budget-loop.md draws them):

- ``wider``: the plan measured more than ``slack`` under the budget; keep it aside and search a
  looser target for a more accurate plan (never looser than where an earlier miss puts the budget);
- ``between``: a wider plan missed while a kept plan waits; search between the two first;
- ``finish``: long fine-tune a plan and judge it again: this try's if it clears the budget by
  half the margin (the reserve for the final re-measurement), the kept plan if this one missed,
  and on the last try any plan under the budget at all;
- ``tighten``: nothing to take; search again against a target tightened by the observed miss.

A fine-tuned model that misses sends the loop on with ``after_final_miss``: the plan kept for its
slack if the last try's wider plan missed that way, else a tightened search. The policy reads
only the tries' records (targets, predictions, measurements), never a model, so every rule is
table-tested on recorded cases (tests/test_policy.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from hwprune.agents import Budget
from hwprune.job.report import percent_used
from hwprune.job.targets import next_target, under_misses, wider_target
from hwprune.job.tries import judged_from

Action = Literal["wider", "between", "tighten", "finish"]


@dataclass(frozen=True)
class Decision:
    action: Action
    target_ms: float | None = None  # the next search's target (wider, between, tighten)
    take: int | None = None  # the try to fine-tune (finish), 0-based
    accept_miss: bool = False  # finish: the fine-tuned model is the outcome even if it misses
    message: str = ""  # what the job tells the user about this decision

    @property
    def searches(self) -> bool:
        return self.action != "finish"


@dataclass
class TryPolicy:
    """The try / slack / search-between / fallback rules of ``hwprune prune --budget``.

    ``kept`` is the only state: the try whose plan met with room to spare, kept while a wider one
    is searched for. Everything else is read from the records the loop hands in.
    """

    budget: Budget
    margin: float
    slack: float
    max_tries: int
    kept: int | None = None
    _fallback: int | None = field(default=None, init=False, repr=False)
    _target: float = field(default=0.0, init=False, repr=False)  # the newest try's, tightened after a final miss

    def after_try(self, tries: list[dict[str, Any]]) -> Decision:
        """The decision after the newest try in ``tries`` was measured (and recorded)."""
        i = len(tries) - 1
        done = tries[i]
        target = done["target_ms"]
        judged = judged_from(done, self.budget)
        last = i == self.max_tries - 1
        again = done.get("same_plan_as")  # 1-based: a slack search found the kept plan again
        used = percent_used(judged.measured.median_ms, judged.budget_ms)

        looser = None if again else wider_target(target, done["predicted_ms"], judged, self.margin, self.slack)
        if looser is not None and not last:
            looser = under_misses(target, looser, tries, self.budget, self.margin, reserve=0.0)
            if looser is not None:
                self.kept = i
                return Decision(
                    "wider",
                    target_ms=looser,
                    message=f"search {i + 1}: the plan uses {used}% of the budget; searching for a wider one "
                    f"against {looser:.3f} ms (this plan is kept in case that one misses)",
                )
            note = (
                f"search {i + 1}: the plan uses {used}% of the budget, but a wider one would be priced over "
                "where an earlier miss puts the budget; taking it"
            )
        else:
            note = ""

        if again:
            take: int | None = again - 1
        elif judged.clears(self.margin) or (last and self.kept is None and judged.met):
            take = i
        else:
            take = self.kept

        if not last and not again and take is not None and take != i:
            between = under_misses(
                tries[take]["target_ms"], float("inf"), tries, self.budget, self.margin, reserve=self.margin
            )
            if between is not None:
                return Decision(
                    "between",
                    target_ms=between,
                    message=f"search {i + 1}: the wider plan is not under the budget by half the margin; searching "
                    f"between it and search {take + 1}'s plan against {between:.3f} ms (that plan is still kept)",
                )

        if take is None:
            return self._tighten(target, done["predicted_ms"], judged.budget_ms, judged.measured.median_ms, note)

        if take != i:
            self.kept = None
            if not again:
                why = "this was the last try" if last else f"no plan lies between it and search {take + 1}'s"
                note = (
                    f"search {i + 1}: the wider plan is not under the budget by half the margin and {why}; "
                    f"taking search {take + 1}'s plan"
                )
        # The last try's wider plan may still miss once fine-tuned; the plan kept for its slack is the fallback.
        self._fallback = self.kept if last and self.kept is not None and self.kept != take else None
        self._target = target
        return Decision("finish", take=take, accept_miss=last and self._fallback is None, message=note)

    def after_final_miss(self, tries: list[dict[str, Any]], take: int) -> Decision:
        """The decision after try ``take``'s fine-tuned model (recorded under ``final``) missed the budget."""
        missed = judged_from(tries[take]["final"], self.budget)
        if self._fallback is not None:
            fallback, self._fallback = self._fallback, None
            return Decision(
                "finish",
                take=fallback,
                accept_miss=True,
                message=f"search {take + 1}: its fine-tuned model {missed.describe()}; on the last try, taking "
                f"search {fallback + 1}'s plan, kept for this",
            )
        return self._tighten(
            self._target,
            tries[take]["predicted_ms"],
            missed.budget_ms,
            missed.measured.median_ms,
            f"search {take + 1}: its fine-tuned model {missed.describe()}; searching again against a tighter target",
        )

    def _tighten(self, target: float, predicted: float, budget_ms: float, measured: float, note: str) -> Decision:
        tighter = next_target(target, predicted, budget_ms, measured, self.margin)
        return Decision("tighten", target_ms=tighter, message=note)
