"""Budget ledger: tiers at their exact boundaries, accrual, alert and hard ceiling."""

from __future__ import annotations

import pytest

from runtime.budget import BudgetLedger, select_tier
from runtime.config import BudgetConfig

DAY = 86400.0


def make_budget(**overrides) -> BudgetConfig:
    fields = dict(max_hourly_cost=10.0, on_demand_price_per_replica_hour=1.0, spot_price_per_replica_hour=0.25)
    fields.update(overrides)
    return BudgetConfig(**fields)


@pytest.mark.parametrize(
    ("remaining", "tier", "factor", "spot"),
    [
        (1.0, "comfortable", 1.0, 0.6),
        (0.6000001, "comfortable", 1.0, 0.6),
        (0.6, "tight", 0.85, 0.8),  # exactly 60 % is no longer "more than 60 %"
        (0.3000001, "tight", 0.85, 0.8),
        (0.3, "critical", 0.6, 0.9),  # "30 % or less"
        (0.0, "critical", 0.6, 0.9),
    ],
    ids=["full", "just-above-60", "exactly-60", "just-above-30", "exactly-30", "empty"],
)
def test_default_tiers_at_boundaries(remaining, tier, factor, spot):
    selected = select_tier(make_budget().tiers, remaining)
    assert selected.name == tier
    assert selected.scale_factor_ratio == factor
    assert selected.spot_ratio == spot


def test_critical_tier_keeps_scale_down_gentle():
    assert select_tier(make_budget().tiers, 0.1).aggressive_scale_down is False
    assert select_tier(make_budget().tiers, 0.9).aggressive_scale_down is True


def test_ledger_accrues_and_reports_remaining():
    # Amount = 10 per hour * 24 h = 240. 4 on-demand (1.0) + 8 spot (0.25) = 6 per hour; 10 h -> 60.
    ledger = BudgetLedger("b", make_budget())
    cost = ledger.accrue("w", on_demand=4, spot=8, seconds=10 * 3600, now=DAY * 10 + 10 * 3600)
    assert cost == pytest.approx(60.0)
    assert ledger.remaining_ratio(DAY * 10 + 10 * 3600) == pytest.approx(0.75)


def test_ledger_resets_each_period():
    ledger = BudgetLedger("b", make_budget())
    ledger.accrue("w", 10, 0, 3600, DAY * 10 + 3600)
    assert ledger.remaining_ratio(DAY * 10 + 3600) < 1.0
    assert ledger.remaining_ratio(DAY * 11 + 1) == 1.0


def test_tier_follows_spend():
    # Spend 100 of 240 -> 58 % left -> tight tier.
    ledger = BudgetLedger("b", make_budget())
    ledger.accrue("w", 10, 0, 10 * 3600, DAY * 10 + 10 * 3600)
    state = ledger.state_for("w", DAY * 10 + 10 * 3600)
    assert state.tier_name == "tight"
    assert state.scale_factor == 0.85


def test_alert_at_seventy_percent_of_hourly_max():
    ledger = BudgetLedger("b", make_budget())
    ledger.accrue("w", 6, 0, 15, DAY * 10)  # 6 per hour < 7
    assert ledger.state_for("w", DAY * 10).alert is False
    ledger.accrue("w", 7, 0, 15, DAY * 10 + 15)  # 7 per hour = 0.7 * 10
    assert ledger.state_for("w", DAY * 10 + 15).alert is True


def test_hard_ceiling_in_replicas():
    # Ceiling 1.2 * 10 = 12 per hour. Another workload spends 4 per hour, leaving 8.
    # At the comfortable mix one replica costs 0.4 * 1.0 + 0.6 * 0.25 = 0.55: floor(8 / 0.55) = 14.
    ledger = BudgetLedger("b", make_budget())
    ledger.accrue("other", 4, 0, 15, DAY * 10)
    assert ledger.state_for("w", DAY * 10).ceiling_replicas == 14


def test_amount_and_hourly_max_are_interchangeable():
    by_amount = make_budget(max_hourly_cost=None, amount=240.0)
    assert by_amount.hourly_cost_limit == pytest.approx(10.0)
    assert make_budget().period_amount == pytest.approx(240.0)


def test_negative_usage_rejected():
    with pytest.raises(ValueError, match="negative"):
        BudgetLedger("b", make_budget()).accrue("w", -1, 0, 15, DAY)


def test_ledger_round_trips():
    ledger = BudgetLedger("b", make_budget())
    ledger.accrue("w", 3, 2, 600, DAY * 3)
    copy = BudgetLedger("b", make_budget())
    copy.restore(ledger.to_dict())
    assert copy.remaining_ratio(DAY * 3) == ledger.remaining_ratio(DAY * 3)
    assert copy.hourly_rate() == ledger.hourly_rate()
