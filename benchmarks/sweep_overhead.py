"""What does a trial of a sweep cost besides its training, run the way the quickstart runs its trials?

    .venv/bin/python benchmarks/sweep_overhead.py [--trials 6] [--concurrency 2] [--steps 100]
                                                  [--preset t5-0.5m] [--batch-size 128] [--threads 1]
                                                  [--set scaling.local_mode=false ...]

Runs `ray-t2t sweep` in a fresh process (its own local Ray, as a user's command starts it) over
`--trials` seeds of `scratch` at a quickstart trial's settings, `--concurrency` trials at a time on
`--threads` CPUs each (scaling.local_mode as configs/quickstart.yaml sets it), and reads the trials'
run records. A trial's slot is free from the moment the
trial before it in that slot wrote its record: everything from then until the trial's first optimizer
step, and from its last step until its own record is written, is fixed overhead (Tune starting the
trial, Ray Train's controller and its actors, the worker's process (none of these three in local mode),
ray_t2t's imports, model, engine and step-0 validation, the tear-down). Trials of the first wave are left out: their start includes
Ray's own start and the data preparation. A run record counts the training alone, so this is wall
time a sweep pays, not a distortion of any recorded time or cost. `--set` passes config overrides
(e.g. to compare a setting side by side). benchmarks/run_all.py runs this file with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.train_overhead import experiment as single_run  # noqa: E402


def experiment(folder: Path, args) -> dict:
    """benchmarks/train_overhead.py's run (a quickstart trial's settings, evaluated once), as a sweep
    over `args.trials` seeds, `args.concurrency` at a time."""
    raw = single_run(folder, argparse.Namespace(**vars(args), zero_stage=0))
    raw["run"]["name"] = "bench_sweep"
    raw["tune"] = {"seeds": list(range(args.trials)), "max_concurrent_trials": args.concurrency}
    raw["scaling"]["local_mode"] = quickstart_local_mode()
    return raw


def quickstart_local_mode() -> bool:
    from ray_t2t.config.experiment import load_config

    return load_config(ROOT / "configs" / "quickstart.yaml").scaling.local_mode


def trial_overheads(records: list[dict], submitted: float, concurrency: int) -> list[dict]:
    """Each trial's fixed overhead, in the order the trials started (by first step).

    With `concurrency` slots filled first come, first served, the k-th trial to start (k >= concurrency)
    took the slot freed by the (k - concurrency)-th record written; the first `concurrency` trials
    started at `submitted` (wave 1). Per trial: `startup_s` (slot free -> first step), its parts
    (slot free -> the worker's process started -> the training function called -> first step), and
    `teardown_s` (last step -> record written).
    """
    stamps = sorted((r["timestamps"] for r in records), key=lambda t: t["first_step"])
    freed = sorted(t["record_written"] for t in stamps)
    trials = []
    for k, t in enumerate(stamps):
        slot_free = submitted if k < concurrency else freed[k - concurrency]
        trial = {
            "wave": 1 + k // concurrency,
            "first_wave": k < concurrency,
            "startup_s": t["first_step"] - slot_free,
            "teardown_s": t["record_written"] - t["last_step"],
            "train_s": t["last_step"] - t["first_step"],
        }
        if t.get("process_start") is not None and t.get("function_start") is not None:
            trial["parts_s"] = {
                "until_worker_process_s": t["process_start"] - slot_free,
                "worker_process_to_function_s": t["function_start"] - t["process_start"],
                "function_to_first_step_s": t["first_step"] - t["function_start"],
            }
        trials.append(trial)
    return trials


def summarize(trials: list[dict], records: list[dict]) -> dict:
    """Medians over the trials after the first wave (every trial if there is only one wave)."""
    later = [t for t in trials if not t["first_wave"]] or trials
    median = statistics.median
    figures = {
        "trials": len(trials),
        "measured_trials": len(later),
        "startup_s": median(t["startup_s"] for t in later),
        "teardown_s": median(t["teardown_s"] for t in later),
        "overhead_s": median(t["startup_s"] + t["teardown_s"] for t in later),
        "first_wave_startup_s": median(t["startup_s"] for t in trials if t["first_wave"]),
        "train_s": median(r["times"]["train_s"] for r in records),
        "tokens_per_s": median(r["tokens_per_s"] for r in records),
        "tokens_per_step": median(r["data"]["tokens_seen"] / r["steps"]["done"] for r in records),
        "per_trial": trials,
    }
    parts = [t["parts_s"] for t in later if "parts_s" in t]
    if parts:
        figures["startup_parts_s"] = {key: median(p[key] for p in parts) for key in parts[0]}
    return figures


def measure(args) -> dict:
    """Run the sweep in a fresh process and read its records."""
    from ray_t2t.config.experiment import load_config
    from ray_t2t.ledger import read_record

    with tempfile.TemporaryDirectory(prefix="ray_t2t_bench_sweep_") as scratch:
        folder = Path(scratch)
        config = folder / "sweep.yaml"
        config.write_text(yaml.safe_dump(experiment(folder / "runs", args), sort_keys=False))
        cfg = load_config(config, args.set)  # a bad --set fails here, with the config's own message
        command = [sys.executable, "-m", "ray_t2t.cli", "sweep", str(config), *args.set]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        submitted = time.time()
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wall_s = time.time() - submitted
        if done.returncode != 0:
            sys.stdout.write(done.stdout[-4000:])
            raise SystemExit(f"ray-t2t sweep failed (exit {done.returncode}): {' '.join(command)}")
        sweep = cfg.experiment_dir / "sweep"
        records = [read_record(path) for path in sorted(sweep.iterdir())] if sweep.is_dir() else []
        records = [r for r in records if r and r.get("status") == "finished"]
        if len(records) != args.trials:
            raise SystemExit(f"expected {args.trials} finished trial records in {sweep}, found {len(records)}")
        trials = trial_overheads(records, submitted, cfg.tune.max_concurrent_trials)
    return {
        "preset": args.preset,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "threads": args.threads,
        "concurrency": args.concurrency,
        "set": args.set,
        "local_mode": cfg.scaling.local_mode,
        "sweep_wall_s": wall_s,
        **summarize(trials, records),
    }


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=6, help="seeds of scratch in the sweep")
    parser.add_argument("--concurrency", type=int, default=2, help="trials at a time (tune.max_concurrent_trials)")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps a trial")
    parser.add_argument("--preset", default="t5-0.5m")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="CPUs of each trial's worker")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser


def main() -> None:
    args = parser().parse_args()
    figures = measure(args)
    where = "in their Tune trials' processes (local mode)" if figures["local_mode"] else "on Ray Train workers"
    print(
        f"ray-t2t sweep: {figures['trials']} trials of {args.steps} steps ({args.preset}, batch {args.batch_size}), "
        f"{args.concurrency} at a time, {args.threads} CPU each, {where}: {figures['sweep_wall_s']:.0f} s in all"
    )
    for trial in figures["per_trial"]:
        parts = trial.get("parts_s")
        detail = (
            (
                f"  (until the worker's process {parts['until_worker_process_s']:.1f} s, then the function "
                f"{parts['worker_process_to_function_s']:.1f} s, then the first step "
                f"{parts['function_to_first_step_s']:.1f} s)"
            )
            if parts
            else ""
        )
        print(
            f"  wave {trial['wave']}: start-up {trial['startup_s']:5.1f} s{detail}, training {trial['train_s']:.1f} s, "
            f"tear-down {trial['teardown_s']:.1f} s"
        )
    print(
        f"  per trial after the first wave (median of {figures['measured_trials']}): "
        f"{figures['overhead_s']:.1f} s of fixed overhead, {figures['train_s']:.1f} s of training"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
