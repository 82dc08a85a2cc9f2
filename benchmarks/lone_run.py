"""What does a lone `ray-t2t train` cost besides its training, as the quickstart runs it (local mode)?

    .venv/bin/python benchmarks/lone_run.py [--rounds 2] [--steps 100] [--preset t5-0.5m]
                                            [--batch-size 128] [--threads 1]

Runs `ray-t2t train` in a fresh process, as a user types it, on one prepared experiment at a
quickstart trial's settings (benchmarks/train_overhead.py's run): once with scaling.local_mode as
configs/quickstart.yaml sets it (the run trains in the command's own process and starts no Ray) and
once on a Ray Train worker (scaling.local_mode false: a local Ray, Ray Train's controller and its
actors, the worker's process), alternated `--rounds` times. Per run, from the command's launch: its
first optimizer step, its last step -> record written, record written -> the command exits, and the
run's training tokens/s. The data is prepared once beforehand, as a rerun on an experiment finds it.
Each figure is its best (lowest time, highest tokens/s) round. benchmarks/run_all.py runs this file
with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.sweep_overhead import quickstart_local_mode  # noqa: E402
from benchmarks.train_overhead import experiment as single_run  # noqa: E402

MODES = {"local_mode": True, "workers": False}  # name -> scaling.local_mode


def experiment(folder: Path, args) -> dict:
    """train_overhead's run, with one scratch method label per run (each its own run folder)."""
    raw = single_run(folder, argparse.Namespace(**vars(args), zero_stage=0))
    raw["run"]["name"] = "bench_lone"
    raw["methods"] = [
        {"name": "scratch", "label": f"{mode}-{round_}"} for round_ in range(args.rounds) for mode in MODES
    ]
    return raw


def one_run(config: Path, cfg, label: str, local_mode: bool) -> dict:
    """`ray-t2t train CONFIG method=LABEL scaling.local_mode=...` in a fresh process; its timings."""
    from ray_t2t.ledger import read_record

    command = [
        sys.executable,
        "-m",
        "ray_t2t.cli",
        "-v",
        "train",
        str(config),
        f"method={label}",
        f"scaling.local_mode={str(local_mode).lower()}",
    ]
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}  # a local run, as on a laptop
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    launched = time.time()
    done = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    exited = time.time()
    if done.returncode != 0:
        sys.stdout.write(done.stdout[-4000:])
        raise SystemExit(f"ray-t2t train failed (exit {done.returncode}): {' '.join(command)}")
    record = read_record(cfg.experiment_dir / "runs" / label)
    stamps = record["timestamps"]
    return {
        "startup_s": stamps["first_step"] - launched,
        "teardown_s": stamps["record_written"] - stamps["last_step"],
        "exit_s": exited - stamps["record_written"],
        "wall_s": exited - launched,
        "train_s": record["times"]["train_s"],
        "tokens_per_s": record["tokens_per_s"],
        "ray_started": "Started a local Ray instance" in done.stdout,
    }


def measure(args) -> dict:
    from ray_t2t.config.experiment import load_config
    from ray_t2t.data import prepare_data

    quickstart = quickstart_local_mode()
    with tempfile.TemporaryDirectory(prefix="ray_t2t_bench_lone_") as scratch:
        folder = Path(scratch)
        config = folder / "lone.yaml"
        config.write_text(yaml.safe_dump(experiment(folder / "runs", args), sort_keys=False))
        cfg = load_config(config)
        prepare_data(cfg, log=lambda message: None)  # as a rerun finds it: the same in both modes
        runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
        for round_ in range(args.rounds):
            for mode, local_mode in MODES.items():
                runs[mode].append(one_run(config, cfg, f"{mode}-{round_}", local_mode))
    best = {
        mode: {
            key: (max if key == "tokens_per_s" else min)(run[key] for run in values)
            for key in ("startup_s", "teardown_s", "exit_s", "wall_s", "train_s", "tokens_per_s")
        }
        for mode, values in runs.items()
    }
    return {
        "preset": args.preset,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "threads": args.threads,
        "rounds": args.rounds,
        "quickstart_local_mode": quickstart,
        "runs": runs,
        "best": best,
        "startup_ratio": best["local_mode"]["startup_s"] / best["workers"]["startup_s"],
        "overhead_s": {mode: b["startup_s"] + b["teardown_s"] + b["exit_s"] for mode, b in best.items()},
        "tokens_per_s_ratio": best["local_mode"]["tokens_per_s"] / best["workers"]["tokens_per_s"],
    }


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two modes; each figure is its best")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps a run")
    parser.add_argument("--preset", default="t5-0.5m")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="CPUs of the run's worker")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser


def main() -> None:
    args = parser().parse_args()
    figures = measure(args)
    print(
        f"ray-t2t train, a fresh process each: {args.steps} steps ({args.preset}, batch {args.batch_size}, "
        f"{args.threads} CPU), {args.rounds} round(s), best of each; the quickstart sets scaling.local_mode: "
        f"{str(figures['quickstart_local_mode']).lower()}"
    )
    for mode, values in figures["runs"].items():
        for run in values:
            print(
                f"  {mode:10s} launch -> first step {run['startup_s']:5.1f} s, training {run['train_s']:5.1f} s "
                f"({run['tokens_per_s']:,.0f} tokens/s), last step -> record {run['teardown_s']:.1f} s, "
                f"record -> exit {run['exit_s']:.1f} s, {run['wall_s']:.1f} s in all"
                + (", started a Ray" if run["ray_started"] else ", no Ray")
            )
    best = figures["best"]
    print(
        f"  launch -> first step: local mode {best['local_mode']['startup_s']:.1f} s vs Ray Train worker "
        f"{best['workers']['startup_s']:.1f} s ({figures['startup_ratio']:.2f}); fixed overhead "
        f"{figures['overhead_s']['local_mode']:.1f} s vs {figures['overhead_s']['workers']:.1f} s; "
        f"tokens/s {figures['tokens_per_s_ratio']:.3f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
