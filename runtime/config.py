"""Typed configuration: YAML files loaded into frozen pydantic models.

Every numeric field carries its unit in its name. Unknown keys are rejected, and
`load_config` reports every problem of a file at once, each with its key path, the
rejected value and how to fix it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ForecastModelName = Literal["auto", "seasonal_naive", "holt_winters", "stl_ets", "none"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScalingPolicy(StrictModel):
    """One HPA rate policy: change at most `value` pods or percent per `period_seconds`."""

    type: Literal["Pods", "Percent"] = Field(description="Pods: an absolute count; Percent: a share of the replicas at the start of the period.")
    value: int = Field(gt=0, description="Pods or percent allowed per period.")
    period_seconds: int = Field(gt=0, le=1800, description="Length of the look-back period in seconds (HPA allows 1..1800).")


class ScalingRules(StrictModel):
    """Stabilization and rate limits for one direction, with the HPA's autoscaling/v2 meaning."""

    stabilization_window_seconds: int = Field(ge=0, le=3600, description="Seconds of past recommendations considered before changing in this direction.")
    select_policy: Literal["Max", "Min", "Disabled"] = Field(default="Max", description="Max: the policy allowing the largest change wins; Min: the smallest; Disabled: no change in this direction.")
    policies: tuple[ScalingPolicy, ...] = Field(min_length=1, description="Rate policies; see select_policy.")


def _default_scale_up() -> ScalingRules:
    return ScalingRules(
        stabilization_window_seconds=60,
        select_policy="Max",
        policies=(
            ScalingPolicy(type="Percent", value=50, period_seconds=30),
            ScalingPolicy(type="Pods", value=10, period_seconds=30),
        ),
    )


def _default_scale_down() -> ScalingRules:
    return ScalingRules(
        stabilization_window_seconds=600,
        select_policy="Max",
        policies=(ScalingPolicy(type="Percent", value=5, period_seconds=120),),
    )


class Behavior(StrictModel):
    """HPA-compatible behavior; defaults suit data-processing agents (fast up, slow down)."""

    scale_up: ScalingRules = Field(default_factory=_default_scale_up)
    scale_down: ScalingRules = Field(default_factory=_default_scale_down)


def kubernetes_hpa_default_behavior() -> Behavior:
    """Return the behavior a Kubernetes HPA applies when its spec sets none (autoscaling/v2 defaults)."""
    return Behavior(
        scale_up=ScalingRules(
            stabilization_window_seconds=0,
            select_policy="Max",
            policies=(
                ScalingPolicy(type="Percent", value=100, period_seconds=15),
                ScalingPolicy(type="Pods", value=4, period_seconds=15),
            ),
        ),
        scale_down=ScalingRules(
            stabilization_window_seconds=300,
            select_policy="Max",
            policies=(ScalingPolicy(type="Percent", value=100, period_seconds=15),),
        ),
    )


class TargetRef(StrictModel):
    """The Kubernetes object whose scale subresource the daemon changes."""

    api_version: str = Field(default="apps/v1", description="API group/version of the target.")
    kind: str = Field(default="Deployment", description="Deployment, StatefulSet, or any kind with a scale subresource.")
    namespace: str = Field(min_length=1, max_length=63, description="Namespace of the target object.")
    name: str = Field(min_length=1, max_length=253, description="Name of the target object.")


class TraceSourceConfig(StrictModel):
    """Replays a CSV trace (`timestamp,value`, requests per interval) on the wall clock."""

    kind: Literal["trace"]
    path: Path = Field(description="CSV file with the header timestamp,value.")
    speedup_ratio: float = Field(default=1.0, gt=0, description="Trace seconds replayed per wall-clock second.")


class PrometheusSourceConfig(StrictModel):
    """Reads a signal with a PromQL instant query each poll, and its history with range queries at start.

    Credentials come from a file or an environment variable, never from the config
    itself, and are never logged.
    """

    kind: Literal["prometheus"]
    url: str = Field(pattern=r"^https?://", description="Base URL of the Prometheus server, for example http://prometheus:9090.")
    query: str = Field(min_length=1, description="PromQL instant query that must return exactly one series.")
    query_id: str | None = Field(default=None, description="Name of the query in logs; defaults to workload/signal.")
    history_query: str | None = Field(default=None, description="PromQL for the history range queries; defaults to query.")
    history_window_seconds: int = Field(default=14 * 86400, ge=0, description="History loaded at start; 0 disables the backfill.")
    history_step_seconds: int = Field(default=60, gt=0, description="Resolution of the history range queries.")
    poll_interval_seconds: float = Field(default=15.0, gt=0, description="Period of the instant query.")
    timeout_seconds: float = Field(default=10.0, gt=0, description="HTTP timeout of one query.")
    backoff_initial_seconds: float = Field(default=1.0, gt=0, description="First retry delay after a failed query; doubles up to backoff_max_seconds.")
    backoff_max_seconds: float = Field(default=60.0, gt=0, description="Maximum retry delay after repeated failures.")
    bearer_token_file: Path | None = Field(default=None, description="File containing a bearer token.")
    bearer_token_env: str | None = Field(default=None, description="Environment variable containing a bearer token.")
    basic_auth_username: str | None = Field(default=None, description="User name for HTTP basic auth.")
    basic_auth_password_file: Path | None = Field(default=None, description="File containing the basic auth password.")
    basic_auth_password_env: str | None = Field(default=None, description="Environment variable containing the basic auth password.")
    tls_ca_file: Path | None = Field(default=None, description="CA bundle used to verify an https URL; the system store when unset.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers sent with every query.")

    @model_validator(mode="after")
    def _check_auth(self) -> "PrometheusSourceConfig":
        bearer = [name for name in ("bearer_token_file", "bearer_token_env") if getattr(self, name) is not None]
        password = [name for name in ("basic_auth_password_file", "basic_auth_password_env") if getattr(self, name) is not None]
        if len(bearer) > 1 or len(password) > 1:
            raise ValueError(f"set at most one of {bearer + password}; give each secret from one place")
        if bearer and (password or self.basic_auth_username is not None):
            raise ValueError("set either a bearer token or basic auth, not both")
        if (self.basic_auth_username is None) != (not password):
            raise ValueError("basic auth needs basic_auth_username and one of basic_auth_password_file or basic_auth_password_env")
        if any(name.lower() == "authorization" for name in self.headers):
            raise ValueError("headers must not contain Authorization; use bearer_token_file, bearer_token_env or basic auth so the secret is never in the config")
        if self.backoff_initial_seconds > self.backoff_max_seconds:
            raise ValueError(f"backoff_initial_seconds={self.backoff_initial_seconds} exceeds backoff_max_seconds={self.backoff_max_seconds}; lower the first or raise the second")
        return self


class KafkaConnectionConfig(StrictModel):
    """How to reach a Kafka cluster; the SASL password comes from a file or an environment variable."""

    bootstrap_servers: str = Field(min_length=1, description="Comma-separated host:port list.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(default="PLAINTEXT", description="Kafka security.protocol: TLS and SASL combinations.")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(default="PLAIN", description="SASL mechanism for the SASL protocols.")
    sasl_username: str | None = Field(default=None, description="SASL user name; required with SASL_PLAINTEXT and SASL_SSL.")
    sasl_password_file: Path | None = Field(default=None, description="File containing the SASL password.")
    sasl_password_env: str | None = Field(default=None, description="Environment variable containing the SASL password.")
    tls_ca_file: Path | None = Field(default=None, description="CA bundle for SSL and SASL_SSL; the system store when unset.")
    request_timeout_seconds: float = Field(default=10.0, gt=0, description="Timeout of one broker request.")

    @model_validator(mode="after")
    def _check_sasl(self) -> "KafkaConnectionConfig":
        uses_sasl = self.security_protocol.startswith("SASL")
        has_password = self.sasl_password_file is not None or self.sasl_password_env is not None
        if self.sasl_password_file is not None and self.sasl_password_env is not None:
            raise ValueError("set only one of sasl_password_file and sasl_password_env")
        if uses_sasl and (self.sasl_username is None or not has_password):
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_username and one of sasl_password_file or sasl_password_env")
        if not uses_sasl and (self.sasl_username is not None or has_password):
            raise ValueError(f"SASL credentials are set but security_protocol is {self.security_protocol}; use SASL_PLAINTEXT or SASL_SSL, or remove them")
        return self


class KafkaLagSourceConfig(KafkaConnectionConfig):
    """Consumer lag of one group computed from the broker's offsets each poll.

    On a signal with role backlog it emits the lag in records, with the activation
    threshold and replica cap applied; on a signal with role load it emits the arrival
    rate (growth of the log-end offsets, records per second). Signals of one workload
    with equal settings share one connection.
    """

    kind: Literal["kafka_lag"]
    group_id: str = Field(min_length=1, description="Consumer group whose lag is measured.")
    topics: tuple[str, ...] = Field(min_length=1, description="Topics the group consumes.")
    offset_reset_policy: Literal["latest", "earliest"] = Field(default="latest", description="The group's auto.offset.reset: how partitions without a committed offset count.")
    lag_threshold: int = Field(default=1000, ge=1, description="Records of lag one replica may hold; used as target_per_replica when that is unset.")
    activation_lag_threshold: int = Field(default=0, ge=0, description="Total lag must exceed this to scale from 0 to 1.")
    allow_idle_consumers: bool = Field(default=False, description="false: replicas are capped at the partition count.")
    limit_to_partitions_with_lag: bool = Field(default=False, description="true: replicas are capped at the number of partitions with lag.")
    stuck_partition_after_seconds: float | None = Field(default=300.0, gt=0, description="A partition with lag whose committed offset has not moved for this long is stuck and left out of the demand; none disables it.")
    poll_interval_seconds: float = Field(default=5.0, gt=0, description="Period of the offset queries.")
    rate_window_seconds: float = Field(default=60.0, gt=0, description="Window over which arrival and consumption rates are measured.")
    backoff_max_seconds: float = Field(default=60.0, gt=0, description="Maximum retry delay after repeated broker errors.")


class KafkaEventsSourceConfig(KafkaConnectionConfig):
    """Lag events read from a Kafka topic; each accepted event triggers an immediate evaluation.

    The event schema is documented in docs/lag-events.md. Signals with equal
    connection, topic and group_id settings share one consumer, which routes each
    event to the signals it matches: by `workload` name, or by consumer group and
    topic through match_group and match_topic.
    """

    kind: Literal["kafka_events"]
    topic: str = Field(min_length=1, description="Topic the lag events are read from.")
    group_id: str = Field(default="agent-autoscaler-lag-events", min_length=1, description="Consumer group of the daemon itself; offsets are committed after processing.")
    match_group: str | None = Field(default=None, description="Also accept events that name this consumer group instead of the workload.")
    match_topic: str | None = Field(default=None, description="With match_group: accept only events for this topic.")
    max_event_bytes: int = Field(default=65536, gt=0, description="Larger events are rejected as oversize.")
    max_future_seconds: float = Field(default=30.0, ge=0, description="Events stamped further ahead of the daemon's clock are rejected.")
    max_age_seconds: float = Field(default=300.0, gt=0, description="Events older than this are rejected.")


SourceConfig = Annotated[
    Union[TraceSourceConfig, PrometheusSourceConfig, KafkaLagSourceConfig, KafkaEventsSourceConfig],
    Field(discriminator="kind"),
]


class SignalConfig(StrictModel):
    """One signal the workload scales on, like one metric of an HPA."""

    name: str = Field(min_length=1, description="Unique within the workload; used in logs and metrics.")
    role: Literal["load", "backlog"] = Field(
        description="load: arrival rate in units per second, forecast and served by capacity_per_replica; "
        "backlog: a queue length such as consumer lag, served by target_per_replica."
    )
    target_per_replica: float | None = Field(default=None, gt=0, description="For backlog signals: backlog one replica may hold (default 1000 records of lag).")
    stale_after_seconds: float = Field(default=120.0, gt=0, description="A sample older than this is unknown, never zero.")
    source: SourceConfig


class ForecasterConfig(StrictModel):
    """Forecasting settings of the load signal."""

    model: ForecastModelName = Field(default="auto", description="auto picks by rolling-origin backtest (MASE); none disables forecasting.")
    resolution_seconds: int = Field(default=300, ge=1, description="History is averaged into buckets of this length before fitting.")
    season_length_seconds: int = Field(default=86400, gt=0, description="Length of one season (86400 for a daily cycle).")
    history_window_seconds: int = Field(default=7 * 86400, gt=0, description="History kept and used for fitting.")
    upper_quantile_ratio: float = Field(default=0.9, gt=0.5, lt=1.0, description="Quantile of the forecast used for headroom.")
    refit_interval_seconds: int = Field(default=86400, gt=0, description="Full refit (parameter optimization and model selection) period.")
    update_interval_seconds: int = Field(default=900, gt=0, description="Period of cheap updates that rerun the fitted model on new history.")

    @model_validator(mode="after")
    def _check_lengths(self) -> "ForecasterConfig":
        if self.season_length_seconds % self.resolution_seconds != 0:
            raise ValueError(
                f"season_length_seconds={self.season_length_seconds} is not a multiple of "
                f"resolution_seconds={self.resolution_seconds}; pick a resolution that divides the season"
            )
        if self.update_interval_seconds > self.refit_interval_seconds:
            raise ValueError(
                f"update_interval_seconds={self.update_interval_seconds} exceeds refit_interval_seconds="
                f"{self.refit_interval_seconds}; set it to at most the refit interval"
            )
        return self


class WorkloadConfig(StrictModel):
    """One scaled workload."""

    name: str = Field(min_length=1, pattern=r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$", description="Unique workload id used in logs and metrics.")
    target: TargetRef
    budget: str = Field(default="default", description="Name of the budget this workload spends from.")
    min_replicas: int = Field(default=1, ge=0, description="Minimum replica count the daemon requests.")
    max_replicas: int = Field(gt=0, description="Maximum replica count the daemon requests.")
    capacity_per_replica: float = Field(gt=0, description="Load units per second one ready replica serves at full utilization.")
    target_utilization_ratio: float = Field(default=0.8, gt=0, le=1.0, description="Share of capacity_per_replica planned for, as an HPA utilization target.")
    fallback_target_utilization_ratio: float | None = Field(
        default=None, gt=0, le=1.0,
        description="Target utilization while no forecast backs the decision (too little history, a failed fit); "
        "none means target_utilization_ratio. Lets a workload whose forecast supplies its headroom run at 1.0 "
        "and still keep HPA-like headroom when the forecast is missing.",
    )
    tolerance_ratio: float = Field(default=0.1, ge=0, lt=1.0, description="No change while load/target stays within 1 +- this ratio (HPA default 0.1).")
    startup_lead_seconds: int = Field(default=480, ge=0, description="Seconds until a new replica serves load.")
    forecast_horizon_seconds: int = Field(default=900, gt=0, description="How far ahead the forecast proposal looks; at least startup_lead_seconds.")
    signals: tuple[SignalConfig, ...] = Field(
        min_length=1,
        description="At most one signal with role load (forecast); any number with role backlog. A workload with "
        "backlog signals only scales reactively, as KEDA does.",
    )
    forecaster: ForecasterConfig = Field(default_factory=ForecasterConfig)
    behavior: Behavior = Field(default_factory=Behavior)

    @model_validator(mode="after")
    def _check(self) -> "WorkloadConfig":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} exceeds max_replicas={self.max_replicas}; lower min_replicas or raise max_replicas")
        if self.forecast_horizon_seconds < self.startup_lead_seconds:
            raise ValueError(
                f"forecast_horizon_seconds={self.forecast_horizon_seconds} is shorter than startup_lead_seconds="
                f"{self.startup_lead_seconds}; the forecast must look at least one startup lead ahead"
            )
        names = [signal.name for signal in self.signals]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"signal names {duplicates} are repeated; give each signal a unique name")
        load_signals = [signal.name for signal in self.signals if signal.role == "load"]
        if len(load_signals) > 1:
            raise ValueError(
                f"found {len(load_signals)} signals with role 'load' ({load_signals}); keep one, the one the forecaster "
                "uses, and give the others role 'backlog' or a separate workload"
            )
        return self

    @property
    def load_signal(self) -> SignalConfig | None:
        """The arrival-rate signal the forecaster uses; None for a workload that scales on backlog only."""
        return next((signal for signal in self.signals if signal.role == "load"), None)


class BudgetTier(StrictModel):
    """Applies while the remaining budget share is above `above_remaining_ratio`."""

    name: str = Field(description="Tier name shown in decisions and logs.")
    above_remaining_ratio: float = Field(ge=0, lt=1.0, description="Tier applies while remaining share > this; the lowest tier should use 0.")
    scale_factor_ratio: float = Field(gt=0, le=1.0, description="Multiplier on the planned replica count.")
    spot_ratio: float = Field(ge=0, le=1.0, description="Share of replicas placed on spot capacity.")
    aggressive_scale_down: bool = Field(default=True, description="false: budget cuts follow the scale-down rate policy instead of applying at once.")


def _default_tiers() -> tuple[BudgetTier, ...]:
    return (
        BudgetTier(name="comfortable", above_remaining_ratio=0.6, scale_factor_ratio=1.0, spot_ratio=0.6),
        BudgetTier(name="tight", above_remaining_ratio=0.3, scale_factor_ratio=0.85, spot_ratio=0.8),
        BudgetTier(name="critical", above_remaining_ratio=0.0, scale_factor_ratio=0.6, spot_ratio=0.9, aggressive_scale_down=False),
    )


class BudgetConfig(StrictModel):
    """Money available to a group of workloads per period and how it shapes scaling."""

    period_seconds: int = Field(default=86400, gt=0, description="Budget period; spend resets at each period boundary (aligned to the Unix epoch).")
    amount: float | None = Field(default=None, gt=0, description="Money per period; give this or max_hourly_cost.")
    max_hourly_cost: float | None = Field(default=None, gt=0, description="Maximum planned spend per hour; give this or amount.")
    on_demand_price_per_replica_hour: float = Field(gt=0, description="Cost of one on-demand replica running for one hour.")
    spot_price_per_replica_hour: float = Field(gt=0, description="Cost of one spot replica running for one hour.")
    max_spot_ratio: float = Field(default=0.9, ge=0, le=1.0, description="Upper bound for any tier's spot_ratio.")
    min_on_demand_replicas: int = Field(default=1, ge=0, description="On-demand replicas kept whatever the spot ratio.")
    alert_threshold_ratio: float = Field(default=0.7, gt=0, description="Alert when hourly spend reaches this share of max_hourly_cost.")
    hard_ceiling_ratio: float = Field(default=1.2, gt=0, description="Never plan hourly spend above this multiple of max_hourly_cost.")
    tiers: tuple[BudgetTier, ...] = Field(default_factory=_default_tiers, min_length=1)

    @model_validator(mode="after")
    def _check(self) -> "BudgetConfig":
        if (self.amount is None) == (self.max_hourly_cost is None):
            raise ValueError("set exactly one of amount and max_hourly_cost; the other is derived from period_seconds")
        for index, tier in enumerate(self.tiers):
            if tier.spot_ratio > self.max_spot_ratio:
                raise ValueError(
                    f"tiers[{index}] ({tier.name}) spot_ratio={tier.spot_ratio} exceeds max_spot_ratio={self.max_spot_ratio}; "
                    "lower the tier's spot_ratio or raise max_spot_ratio"
                )
        thresholds = [tier.above_remaining_ratio for tier in self.tiers]
        if thresholds != sorted(thresholds, reverse=True) or len(set(thresholds)) != len(thresholds):
            raise ValueError(f"tier above_remaining_ratio values {thresholds} must be strictly decreasing")
        if thresholds[-1] != 0:
            raise ValueError(f"the last tier must have above_remaining_ratio 0 so that every remaining share has a tier (found {thresholds[-1]})")
        if self.hard_ceiling_ratio < self.alert_threshold_ratio:
            raise ValueError(f"hard_ceiling_ratio={self.hard_ceiling_ratio} is below alert_threshold_ratio={self.alert_threshold_ratio}; the alert must come first")
        return self

    @property
    def period_amount(self) -> float:
        if self.amount is not None:
            return self.amount
        assert self.max_hourly_cost is not None
        return self.max_hourly_cost * self.period_seconds / 3600.0

    @property
    def hourly_cost_limit(self) -> float:
        if self.max_hourly_cost is not None:
            return self.max_hourly_cost
        return self.period_amount * 3600.0 / self.period_seconds


class SimulatedActuatorConfig(StrictModel):
    spot_preemptions_per_hour_ratio: float = Field(default=0.0, ge=0, description="Chance per spot replica per hour of a preemption.")
    seed: int = Field(default=1, description="Seed of the preemption random generator, for repeatable runs.")


class SpotSplitTargets(StrictModel):
    """Two objects that together run one workload: one pinned to on-demand nodes, one to spot nodes.

    Both have the kind, API version and namespace of the workload's target.
    """

    on_demand_name: str = Field(min_length=1, max_length=253, description="Object that receives the decision's on-demand replica count, for example web-ondemand.")
    spot_name: str = Field(min_length=1, max_length=253, description="Object that receives the decision's spot replica count, for example web-spot.")


class HpaFloorTarget(StrictModel):
    """Cooperative mode: the daemon sets an existing HorizontalPodAutoscaler's minReplicas to its forecast floor."""

    hpa_name: str = Field(min_length=1, max_length=253, description="autoscaling/v2 HorizontalPodAutoscaler in the target's namespace.")
    raise_max_replicas: bool = Field(default=False, description="true: also raise maxReplicas to the floor when the floor exceeds it; false: such a floor is rejected by the API server (422) and logged.")


class LeaderElectionConfig(StrictModel):
    """A coordination.k8s.io/v1 Lease that lets only one of several daemon replicas actuate."""

    lease_name: str = Field(default="agent-autoscaler", min_length=1, max_length=253, description="Name of the Lease object.")
    lease_namespace: str = Field(default="agent-autoscaler", min_length=1, max_length=63, description="Namespace of the Lease object, usually the daemon's own.")
    lease_duration_seconds: float = Field(default=15.0, gt=0, description="A standby takes over when the holder has not renewed for this long.")
    renew_interval_seconds: float = Field(default=5.0, gt=0, description="Period between renewals and acquisition attempts; well below lease_duration_seconds.")
    identity: str | None = Field(default=None, description="Holder identity written to the Lease; none uses the host name and process id.")

    @model_validator(mode="after")
    def _check_intervals(self) -> "LeaderElectionConfig":
        if self.renew_interval_seconds >= self.lease_duration_seconds:
            raise ValueError(
                f"renew_interval_seconds={self.renew_interval_seconds} is not below lease_duration_seconds="
                f"{self.lease_duration_seconds}; the leader would lose the lease between renewals, so use at most a third of it"
            )
        return self


class KubernetesActuatorConfig(StrictModel):
    """Settings of the `kubernetes` actuator, which writes replica counts through the Kubernetes API."""

    kubeconfig: Path | None = Field(default=None, description="kubeconfig file; none uses the in-cluster service account.")
    context: str | None = Field(default=None, description="kubeconfig context; none uses the file's current context.")
    dry_run: bool = Field(default=False, description="true: every write is sent with dryRun=All, so the API server validates it without storing it.")
    drift_policy: Literal["respect", "override"] = Field(default="respect", description="When someone else changed the replica count: respect skips the next write once; override writes the decision at once.")
    status_refresh_seconds: float = Field(default=60.0, gt=0, description="Maximum age of a cached replica count before it is read again; between reads an unchanged decision costs no API call.")
    conflict_retries: int = Field(default=3, ge=0, le=10, description="Re-reads and retries of a write rejected with 409 Conflict.")
    request_timeout_seconds: float = Field(default=10.0, gt=0, description="Timeout of one API request.")
    field_manager: str = Field(default="agent-autoscaler", min_length=1, max_length=128, description="fieldManager sent with every write.")
    error_log_interval_seconds: float = Field(default=300.0, ge=0, description="A repeated error of one workload is logged at most once per this interval; every occurrence is counted.")
    events: bool = Field(default=True, description="Post a Kubernetes Event on the target object for each change.")
    event_interval_seconds: float = Field(default=60.0, ge=0, description="Minimum time between two Events for one workload.")
    spot_split: dict[str, SpotSplitTargets] = Field(default_factory=dict, description="Workload name to the two objects that receive its on-demand and spot counts.")
    hpa_floor: dict[str, HpaFloorTarget] = Field(default_factory=dict, description="Workload name to the HPA whose minReplicas the daemon sets instead of writing replicas.")
    leader_election: LeaderElectionConfig | None = Field(default=None, description="Lease-based leader election; none means this process always actuates.")
    scaling_policy_namespaces: tuple[Annotated[str, Field(min_length=1, max_length=63)], ...] = Field(
        default=(),
        description="Namespaces whose ScalingPolicy resources define more workloads, one watch each; empty disables them. "
        "The ClusterRole agent-autoscaler must be bound in each.",
    )

    @model_validator(mode="after")
    def _check_modes(self) -> "KubernetesActuatorConfig":
        both = sorted(set(self.spot_split) & set(self.hpa_floor))
        if both:
            raise ValueError(f"workloads {both} are in both spot_split and hpa_floor; choose one mode for each workload")
        return self


class DaemonConfig(StrictModel):
    """Settings of the daemon process itself."""

    tick_seconds: float = Field(default=15.0, gt=0, description="Evaluation period of every workload.")
    event_debounce_seconds: float = Field(default=0.2, ge=0, description="Events for one workload inside this window trigger one evaluation.")
    actuator: Literal["log", "simulated", "kubernetes"] = Field(default="log", description="log: dry run that only logs; simulated: an in-process cluster model; kubernetes: writes through the Kubernetes API.")
    simulated: SimulatedActuatorConfig = Field(default_factory=SimulatedActuatorConfig)
    kubernetes: KubernetesActuatorConfig = Field(default_factory=KubernetesActuatorConfig)
    health_address: str | None = Field(default=None, description="host:port serving /healthz and /readyz; none disables them.")
    metrics_address: str = Field(default="0.0.0.0:9464", description="host:port serving /metrics.")
    log_format: Literal["json", "console"] = Field(default="json", description="json: one JSON object per line, for log collectors; console: aligned key=value for terminals.")
    state_file: Path | None = Field(default=None, description="Per-workload state snapshot for restarts; none disables it.")
    state_snapshot_interval_seconds: float = Field(default=60.0, gt=0, description="Snapshot period; bounds the state lost in a crash.")
    fit_workers: int = Field(default=1, ge=1, description="Processes that fit forecasters off the event loop.")

    @model_validator(mode="after")
    def _check_policy_actuator(self) -> "DaemonConfig":
        if self.kubernetes.scaling_policy_namespaces and self.actuator != "kubernetes":
            raise ValueError(
                f"kubernetes.scaling_policy_namespaces is set but actuator is {self.actuator!r}; "
                "ScalingPolicy resources need actuator: kubernetes, so set it or remove the namespaces"
            )
        return self

    @field_validator("metrics_address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"metrics_address {value!r} is not host:port; use for example 0.0.0.0:9464")
        return value

    @field_validator("health_address")
    @classmethod
    def _check_health_address(cls, value: str | None) -> str | None:
        if value is None:
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"health_address {value!r} is not host:port; use for example 0.0.0.0:8080")
        return value


class AppConfig(StrictModel):
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    budgets: dict[str, BudgetConfig] = Field(min_length=1)
    workloads: tuple[WorkloadConfig, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_references(self) -> "AppConfig":
        names = [workload.name for workload in self.workloads]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"workload names {repeated} are repeated; each workload needs a unique name")
        for workload in self.workloads:
            if workload.budget not in self.budgets:
                raise ValueError(f"workload {workload.name!r} refers to budget {workload.budget!r}, which is not defined; define it under budgets or use one of {sorted(self.budgets)}")
        return self

    @model_validator(mode="after")
    def _check_kubernetes_references(self) -> "AppConfig":
        names = {workload.name for workload in self.workloads}
        kubernetes = self.daemon.kubernetes
        for section, mapping in (("spot_split", kubernetes.spot_split), ("hpa_floor", kubernetes.hpa_floor)):
            unknown = sorted(set(mapping) - names)
            if unknown:
                raise ValueError(f"daemon.kubernetes.{section} names workloads {unknown} that are not defined; use names from workloads ({sorted(names)})")
        return self


class ConfigError(Exception):
    """Raised with every problem found in one config file; `problems` contains one line each."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        listing = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"invalid config {self.path}: {len(problems)} problem(s)\n{listing}")


def _describe(error: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in error["loc"] if part not in ("function-after", "tagged-union"))
    kind = error["type"]
    value = error.get("input")
    message = error["msg"]
    if kind == "extra_forbidden":
        hint = "remove the key or check its spelling"
    elif kind == "missing":
        hint = "add this required key"
        return f"{location or '<root>'}: missing; {hint}"
    elif kind == "value_error":
        return f"{location or '<root>'}: {message.removeprefix('Value error, ')}"
    else:
        hint = "change the value"
    if isinstance(value, dict):
        shown = "{...}"
    elif isinstance(value, (list, tuple)):
        shown = "[...]"
    else:
        shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{location or '<root>'}: {message} (got {shown}); {hint}"


def _relevant_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop a list's "too short" error when one of its items failed: the item's error is the cause."""
    locations = [tuple(error["loc"]) for error in errors]
    kept = []
    for error, location in zip(errors, locations):
        if error["type"] == "too_short" and any(other[: len(location)] == location and len(other) > len(location) for other in locations):
            continue
        kept.append(error)
    return kept


def parse_config(data: Any, source: Path | str = "<memory>") -> AppConfig:
    """Validate already-parsed YAML data, raising ConfigError with every problem."""
    if not isinstance(data, dict):
        raise ConfigError(source, [f"<root>: expected a mapping with keys daemon, budgets, workloads (got {type(data).__name__})"])
    try:
        return AppConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [_describe(error) for error in _relevant_errors(exc.errors())]) from None


def load_config(path: Path | str) -> AppConfig:
    """Read and validate a YAML config file, raising ConfigError naming every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, ["file not found; pass an existing file, for example config/example.yaml"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [f"cannot read the file ({exc}); check its permissions and encoding (UTF-8)"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, [f"YAML syntax error at {where}: {problem}; fix the indentation or quoting there"]) from None
    config = parse_config(data, path)
    return _resolve_paths(config, path.parent)


def _resolve_paths(config: AppConfig, base: Path) -> AppConfig:
    """Resolve relative trace paths against the config file's folder, then the working directory."""
    workloads = []
    for workload in config.workloads:
        signals = []
        for signal in workload.signals:
            source = signal.source
            if isinstance(source, TraceSourceConfig) and not source.path.is_absolute():
                candidate = base / source.path
                if not candidate.exists() and source.path.exists():
                    candidate = source.path
                source = source.model_copy(update={"path": candidate})
            signals.append(signal.model_copy(update={"source": source}))
        workloads.append(workload.model_copy(update={"signals": tuple(signals)}))
    return config.model_copy(update={"workloads": tuple(workloads)})


def missing_files(config: AppConfig) -> list[str]:
    """List the files a config names that do not exist or cannot be read, one problem each.

    Loading a config does not touch the file system, so that a config can be checked
    on another machine; `validate-config` calls this as well, because a missing trace
    or secret file only shows when the daemon starts.
    """
    problems = []
    checks: list[tuple[str, Path | None]] = []
    for index, workload in enumerate(config.workloads):
        for signal_index, signal in enumerate(workload.signals):
            prefix = f"workloads.{index}.signals.{signal_index}.source"
            source = signal.source
            for field in ("path", "bearer_token_file", "basic_auth_password_file", "sasl_password_file", "tls_ca_file"):
                checks.append((f"{prefix}.{field}", getattr(source, field, None)))
    checks.append(("daemon.kubernetes.kubeconfig", config.daemon.kubernetes.kubeconfig))
    for key, path in checks:
        if path is None:
            continue
        if not path.is_file():
            problems.append(f"{key}: file {str(path)!r} not found; create it or correct the path (relative paths start at the config file's folder)")
        elif not os.access(path, os.R_OK):
            problems.append(f"{key}: file {str(path)!r} is not readable by this user; fix its permissions")
    state_file = config.daemon.state_file
    if state_file is not None and not state_file.parent.is_dir():
        problems.append(f"daemon.state_file: folder {str(state_file.parent)!r} does not exist; create it or choose another path")
    return problems
