"""The `agent-autoscaler` command: run, simulate, validate-config."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np

from runtime.config import AppConfig, ConfigError, TraceSourceConfig, WorkloadConfig, load_config, missing_files
from runtime.traces import Trace, TraceError, load_trace

EXIT_INVALID_CONFIG = 2
EXIT_INVALID_INPUT = 3
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "example.yaml"


def _config_path(value: str | None) -> Path:
    if value:
        return Path(value)
    if Path("config/example.yaml").exists():
        return Path("config/example.yaml")
    return DEFAULT_CONFIG


def _load_or_exit(path: Path) -> AppConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_INVALID_CONFIG) from None


def _trace_workload(config: AppConfig, trace_path: Path | None) -> tuple[WorkloadConfig, Path, bool]:
    """Return the workload to simulate, the trace path, and whether the workload matched the trace."""
    for workload in config.workloads:
        source = workload.load_signal.source if workload.load_signal is not None else None
        if isinstance(source, TraceSourceConfig):
            if trace_path is None or source.path.resolve() == trace_path.resolve():
                return workload, source.path, True
    if trace_path is None:
        print("error: no workload in the config replays a trace; pass --trace FILE", file=sys.stderr)
        raise SystemExit(EXIT_INVALID_CONFIG)
    templates = [workload for workload in config.workloads if workload.load_signal is not None]
    if not templates:
        print("error: simulate replays load, but no workload in the config has a signal with role 'load'; add one", file=sys.stderr)
        raise SystemExit(EXIT_INVALID_CONFIG)
    return templates[0], trace_path, False


def _adapt_workload(workload: WorkloadConfig, trace: Trace, capacity: float) -> WorkloadConfig:
    """Fit a template workload to a foreign trace: its capacity, and a forecaster resolution
    no finer than the trace's interval."""
    forecaster = workload.forecaster
    resolution = forecaster.resolution_seconds
    if trace.interval_seconds > resolution:
        candidate = int(trace.interval_seconds)
        if forecaster.season_length_seconds % candidate == 0:
            resolution = candidate
    forecaster = forecaster.model_copy(update={"resolution_seconds": resolution})
    return workload.model_copy(update={"capacity_per_replica": capacity, "forecaster": forecaster, "name": trace.name.replace("_", "-").lower()})


def _unwritable(value: str | None) -> str | None:
    """Return why an output file cannot be written, checked before a long simulation starts."""
    if not value:
        return None
    path = Path(value)
    if path.is_dir():
        return "is a folder; give a file name"
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        return f"folder {str(folder)!r} does not exist; create it first"
    if not os.access(folder, os.W_OK):
        return f"folder {str(folder)!r} is not writable by this user"
    return None


def cmd_validate_config(args: argparse.Namespace) -> int:
    path = _config_path(args.config)
    config = _load_or_exit(path)
    problems = missing_files(config)
    if problems:
        print(f"error: {ConfigError(path, problems)}", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    print(f"{path}: valid ({len(config.workloads)} workload(s), {len(config.budgets)} budget(s))")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from runtime import report
    from runtime.simulate import BISECTION_STEPS, SimulationSetup, simulate

    config = _load_or_exit(_config_path(args.config))
    trace_arg = Path(args.trace) if args.trace else None
    workload, trace_path, matched = _trace_workload(config, trace_arg)
    try:
        trace = load_trace(trace_path)
    except TraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID_INPUT

    if args.capacity_per_replica is not None and args.capacity_per_replica <= 0:
        print(f"error: --capacity-per-replica {args.capacity_per_replica} must be positive (load units per second one replica serves)", file=sys.stderr)
        return EXIT_INVALID_INPUT
    capacity_note = "from the config"
    if not matched or args.capacity_per_replica is not None:
        if args.capacity_per_replica is not None:
            capacity, capacity_note = args.capacity_per_replica, "from --capacity-per-replica"
        else:
            p99 = float(np.percentile(trace.rates, 99))
            if p99 <= 0:
                print(f"error: {trace_path}: the 99th-percentile load is 0, so no default capacity exists; pass --capacity-per-replica", file=sys.stderr)
                return EXIT_INVALID_INPUT
            capacity, capacity_note = p99 / 30.0, "99th-percentile load / 30"
        workload = _adapt_workload(workload, trace, capacity)

    for option, value in (("--report", args.report), ("--decisions", args.decisions), ("--chart", None if args.no_chart else args.chart)):
        problem = _unwritable(value)
        if problem:
            print(f"error: {option} {value}: {problem}", file=sys.stderr)
            return EXIT_INVALID_INPUT

    warmup = args.warmup_seconds
    if warmup is not None and warmup < 0:
        print(f"error: --warmup-seconds {warmup:g} is negative; give 0 or more seconds of the trace to use as history only", file=sys.stderr)
        return EXIT_INVALID_INPUT
    if warmup is None:
        # Up to a week of history to train on, but never more than 40 % of the trace.
        warmup = min(7 * 86400.0, 0.4 * trace.duration_seconds)
    if not 0 <= warmup < trace.duration_seconds - config.daemon.tick_seconds:
        print(f"error: --warmup-seconds {warmup:g} leaves nothing to score in a {trace.duration_seconds:g} s trace; use a smaller value", file=sys.stderr)
        return EXIT_INVALID_INPUT
    if not 0 < args.hpa_target_utilization <= 1:
        print(f"error: --hpa-target-utilization {args.hpa_target_utilization} must be in (0, 1]", file=sys.stderr)
        return EXIT_INVALID_INPUT

    setup = SimulationSetup(
        trace=trace, workload=workload, config=config, tick_seconds=config.daemon.tick_seconds,
        warmup_seconds=warmup, hpa_target_utilization_ratio=args.hpa_target_utilization,
        preemptions_per_hour=config.daemon.simulated.spot_preemptions_per_hour_ratio, seed=config.daemon.simulated.seed,
    )
    ticks = len(np.arange(setup.eval_start, setup.eval_end, setup.tick_seconds))
    budget = config.budgets[workload.budget]
    fallback = workload.fallback_target_utilization_ratio
    print(
        f"trace {trace_path}: {len(trace.counts)} intervals of {trace.interval_seconds:g} s\n"
        f"workload {workload.name}{'' if matched else ' (settings of the config workload ' + config.workloads[0].name + ')'}: "
        f"capacity per replica {workload.capacity_per_replica:.6g} units/s ({capacity_note}), "
        f"target utilization {workload.target_utilization_ratio:g}"
        f"{'' if fallback is None else f' ({fallback:g} without a forecast)'}, forecaster {workload.forecaster.model}, "
        f"budget {workload.budget!r} at {budget.hourly_cost_limit:g} per hour\n"
        f"warm-up {warmup / 3600:.1f} h, then {ticks} ticks of {setup.tick_seconds:g} s scored",
        file=sys.stderr,
    )

    started = time.perf_counter()
    bars: dict[str, object] = {}

    def advance(name: str, total: int, unit: str):
        def update(count: int) -> None:
            from tqdm import tqdm

            if name not in bars:
                for other in bars.values():
                    other.close()
                bars[name] = tqdm(total=total, unit=unit, desc=name, file=sys.stderr, mininterval=0.5, delay=2.0)
            bars[name].update(count)

        return None if args.no_progress else update

    # One HPA run at the default target, then up to BISECTION_STEPS for hpa_same_spend.
    result = simulate(
        setup,
        progress=advance("predictive", ticks, "tick"),
        baseline_progress=advance("hpa baselines", 1 + BISECTION_STEPS, "run"),
    )
    for bar in bars.values():
        bar.close()
    elapsed = time.perf_counter() - started

    print(report.format_table(result))
    print(report.TABLE_LEGEND)
    summary = result.forecaster_summary
    print(f"\ncapacity per replica: {workload.capacity_per_replica:.6g} units/s ({capacity_note}); hpa target utilization "
          f"{setup.hpa_target_utilization_ratio:g}; hpa_same_spend target utilization {summary.get('hpa_same_spend_target_utilization_ratio')}")
    print(report.format_forecaster(summary))
    for note in summary.get("notes", []) or []:
        print(f"note: {note}")
    print(f"simulated in {elapsed:.1f} s")
    if args.report:
        report.write_report(result, Path(args.report))
        print(f"report: {args.report}")
    if args.decisions:
        report.write_decisions(result, Path(args.decisions))
        print(f"decisions: {args.decisions}")
    chart = Path(args.chart) if args.chart else Path(f"simulation-{workload.name}.png")
    if not args.no_chart:
        report.write_chart(result, chart)
        print(f"chart: {chart}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from runtime.daemon import run_daemon

    config = _load_or_exit(_config_path(args.config))
    return asyncio.run(run_daemon(config, duration_seconds=args.duration_seconds))


def cmd_manifests(args: argparse.Namespace) -> int:
    from runtime.manifests import ManifestError, render

    try:
        text = render(args.namespace, args.image, args.target_namespace or ["default"])
    except ManifestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    print(text, end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-autoscaler", description="Predictive, budget-aware autoscaler for data-processing agent workloads.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", help="YAML config file (default: config/example.yaml)")
    run.add_argument("--duration-seconds", type=float, default=None, help="stop after this many seconds (default: run until SIGTERM/SIGINT)")
    run.set_defaults(func=cmd_run)

    simulate = sub.add_parser("simulate", help="replay a trace through the planner and compare with HPA baselines")
    simulate.add_argument("--config", help="YAML config file (default: config/example.yaml)")
    simulate.add_argument("--trace", help="CSV trace timestamp,value (requests per interval); default: the trace of the config's workload")
    simulate.add_argument("--capacity-per-replica", type=float, default=None, help="load units per second one replica serves (default for a foreign trace: 99th-percentile load / 30)")
    simulate.add_argument("--hpa-target-utilization", type=float, default=0.8, help="target utilization of the hpa baseline, 0..1 (default 0.8)")
    simulate.add_argument("--warmup-seconds", type=float, default=None, help="leading part of the trace used only as forecaster history (default: min(7 days, 40 %% of the trace))")
    simulate.add_argument("--report", help="write the JSON report here")
    simulate.add_argument("--decisions", help="write one CSV row per tick and policy here")
    simulate.add_argument("--chart", help="PNG chart path (default: simulation-<workload>.png)")
    simulate.add_argument("--no-chart", action="store_true", help="skip the chart")
    simulate.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    simulate.set_defaults(func=cmd_simulate)

    validate = sub.add_parser("validate-config", help="check a config file and report every problem")
    validate.add_argument("--config", help="YAML config file (default: config/example.yaml)")
    validate.add_argument("config_file", nargs="?", help="same as --config")
    validate.set_defaults(func=cmd_validate_config)

    manifests = sub.add_parser("manifests", help="print the Kubernetes manifests from deploy/ for a namespace and image")
    manifests.add_argument("--namespace", default="agent-autoscaler", help="namespace of the daemon, its ServiceAccount and Lease (default: agent-autoscaler)")
    manifests.add_argument("--image", default="agent-autoscaler:0.1.0", help="container image of the daemon (default: agent-autoscaler:0.1.0)")
    manifests.add_argument("--target-namespace", action="append", help="namespace whose workloads the daemon may scale; repeat for several (default: default)")
    manifests.set_defaults(func=cmd_manifests)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config_file", None) and not args.config:
        args.config = args.config_file
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
