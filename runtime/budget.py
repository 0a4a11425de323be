"""Budget ledger: accrues spend, reports the remaining share, picks the tier, alerts and caps.

Pure bookkeeping with no I/O and no clock: callers pass `now` (Unix seconds). The
ledger is serialisable so that a later version can share one ledger between regional
daemons over Kafka.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from runtime.config import BudgetConfig, BudgetTier
from runtime.model import BudgetState


def select_tier(tiers: tuple[BudgetTier, ...], remaining_ratio: float) -> BudgetTier:
    """Return the first tier whose threshold the remaining share is strictly above.

    With the default tiers, exactly 0.6 remaining is already the middle tier and
    exactly 0.3 the lowest, so "30 % or less" selects the critical tier.
    """
    for tier in tiers:
        if remaining_ratio > tier.above_remaining_ratio:
            return tier
    return tiers[-1]


@dataclass(slots=True)
class BudgetLedger:
    """Spend of one budget in its current period, and each workload's current hourly spend rate."""

    name: str
    config: BudgetConfig
    period_start: float | None = None
    spent: float = 0.0
    # Cost per hour of what each workload ran in its last accrued interval.
    hourly_rate_by_workload: dict[str, float] = field(default_factory=dict)
    # Tiers that replace config.tiers for one workload (from a ScalingPolicy's budget_tiers).
    tiers_by_workload: dict[str, tuple[BudgetTier, ...]] = field(default_factory=dict)

    def _roll_period(self, now: float) -> None:
        start = math.floor(now / self.config.period_seconds) * self.config.period_seconds
        if self.period_start != start:
            self.period_start = start
            self.spent = 0.0

    def accrue(self, workload: str, on_demand: int, spot: int, seconds: float, now: float) -> float:
        """Add the cost of running the given replicas for `seconds` ending at `now`; return that cost."""
        if seconds < 0 or on_demand < 0 or spot < 0:
            raise ValueError(f"cannot accrue negative usage (on_demand={on_demand}, spot={spot}, seconds={seconds})")
        self._roll_period(now)
        hourly = on_demand * self.config.on_demand_price_per_replica_hour + spot * self.config.spot_price_per_replica_hour
        cost = hourly * seconds / 3600.0
        self.spent += cost
        self.hourly_rate_by_workload[workload] = hourly
        return cost

    def remaining_ratio(self, now: float) -> float:
        self._roll_period(now)
        return max(0.0, 1.0 - self.spent / self.config.period_amount)

    def hourly_rate(self) -> float:
        return sum(self.hourly_rate_by_workload.values())

    def state_for(self, workload: str, now: float) -> BudgetState:
        """Return what the planner needs from this budget for one workload."""
        remaining = self.remaining_ratio(now)
        tier = select_tier(self.tiers_by_workload.get(workload, self.config.tiers), remaining)
        limit = self.config.hourly_cost_limit
        alert = self.hourly_rate() >= self.config.alert_threshold_ratio * limit
        others = self.hourly_rate() - self.hourly_rate_by_workload.get(workload, 0.0)
        allowed = self.config.hard_ceiling_ratio * limit - others
        # Price of one replica at this tier's mix; the on-demand floor is ignored here,
        # which slightly overestimates the ceiling when spot is cheaper.
        blended = (1 - tier.spot_ratio) * self.config.on_demand_price_per_replica_hour + tier.spot_ratio * self.config.spot_price_per_replica_hour
        ceiling = max(0, int(math.floor(allowed / blended + 1e-9)))
        return BudgetState(
            remaining_ratio=remaining,
            scale_factor=tier.scale_factor_ratio,
            spot_ratio=tier.spot_ratio,
            aggressive_scale_down=tier.aggressive_scale_down,
            tier_name=tier.name,
            alert=alert,
            ceiling_replicas=ceiling,
            min_on_demand_replicas=self.config.min_on_demand_replicas,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "period_start": self.period_start,
            "spent": self.spent,
            "hourly_rate_by_workload": dict(self.hourly_rate_by_workload),
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Load spend saved by `to_dict`; the config stays the one currently loaded."""
        self.period_start = data.get("period_start")
        self.spent = float(data.get("spent", 0.0))
        self.hourly_rate_by_workload = {str(k): float(v) for k, v in data.get("hourly_rate_by_workload", {}).items()}
