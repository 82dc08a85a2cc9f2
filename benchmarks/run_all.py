"""Every benchmark on this machine, each figure against a baseline measured side by side in the same run.

    make bench                                   # == .venv/bin/python benchmarks/run_all.py
    .venv/bin/python benchmarks/run_all.py [--out benchmarks/results.json] [--quick] [--only train,teacher,padding]

Runs, each benchmark in its own process (a fresh Ray each time), then prints one table: each figure,
its baseline, their ratio, the goal and pass/FAIL, and writes everything to --out (JSON; the
benchmarks' full output goes to the same path with .log). Sized to finish in under 15 minutes on 2
CPU cores (~12 minutes when they are otherwise idle); --quick is a smoke run of a minute or two whose figures mean
little. The figures:

- train: benchmarks/train_overhead.py at a quickstart trial's settings (configs/quickstart.yaml's
  student preset and batch, 1 worker of 1 CPU, ZeRO 0) with --scaling and --local-mode, best of 2
  rounds each: tokens/s of the ray_t2t loop vs a plain PyTorch loop (goal >= 0.95), on a Ray Train
  worker and in local mode (the quickstart's: in the benchmark's process); a single run's fixed overhead
  (submit -> first step, in three parts, and last step -> record written); 2 workers of 1 CPU vs 1:
  efficiency = tokens/s(2) / (2 x tokens/s(1)) (goal >= 0.8), and vs a hand-written 2-process DDP
  loop (goal >= 0.95).
- lone: benchmarks/lone_run.py: `ray-t2t train` at the same settings in a fresh process, as a user
  types it, in local mode (no Ray) and on a Ray Train worker, alternated twice: launch -> first
  step, last step -> the command exits, training tokens/s (shown, not judged).
- sweep: benchmarks/sweep_overhead.py: `ray-t2t sweep` of 6 trials at the same settings, 2 at a time
  as the quickstart runs them (in their Tune trials' processes: scaling.local_mode): the fixed
  overhead per trial (its slot freed -> its first step, last step -> record written; median after
  the first wave) and its share of a quickstart trial's training time, 2 at a time (goal <= 10%).
- sweep_workers: the same sweep on Ray Train workers (scaling.local_mode false), shown beside it.
- teacher: benchmarks/teacher_inference.py --read: Ray Data (2 replicas x 1 CPU) vs a plain loop
  with 2 threads in a fresh process, end to end (each side's start-up included) and once started
  (goal >= 0.9); shard bytes per target token at k = 32
  (goal <= 100); reading + decoding the shards into kd_logits' tensors vs the tokens/s the ray_t2t
  loop consumes training kd_logits at a quickstart trial's settings (goal >= 5x).
- options: benchmarks/loop_options.py at the same settings, best of 2 rounds: the optimizer step of
  fused AdamW (what the loop uses) vs torch's default AdamW (goal < 1: kept only if it gains), and,
  for information, a plain loop's tokens/s with each and with eager attention instead of SDPA.
- split_memory: benchmarks/split_memory.py: a training worker's own memory for a 1M-example split
  (synthetic token ids) as the memory-mapped views ray_t2t's Split gives vs as Python lists (goal <=
  0.25), the resident memory, and the time of an epoch of reads.
- shapes: benchmarks/shapes.py --tiny at instruction-like shapes (sources up to 128 tokens, targets
  up to 32, not length-grouped) on a tiny GPT-2 and Llama, best of 2 alternated rounds: tokens/s of
  the ray_t2t loop vs the plain loop (goal >= 0.95, the lower of the two models), and packed vs
  padded (training.packing): the padding share (goal <= 0.6 of padded's) and real tokens/s (goal
  >= 1.05). The GPU version of the same benchmark is in benchmarks/gpu_check.sh.
- padding: the share of pad tokens in a quickstart run's batches (the embedded task's training
  split, its batch size) with length-grouped batching vs without (goal <= 10% grouped); arithmetic
  only, no training.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.suite import format_table, grouping_speed, padding_waste, verdict  # noqa: E402

QUICKSTART = ROOT / "configs" / "quickstart.yaml"
GOALS = {  # figure -> (op, goal) on its ratio (or on its value where there is no baseline)
    "train_ratio": (">=", 0.95),
    "local_mode_ratio": (">=", 0.95),
    "teacher_ratio": (">=", 0.9),
    "teacher_steady_ratio": (">=", 0.9),
    "bytes_per_target_token": ("<=", 100.0),
    "read_ratio": (">=", 5.0),
    "overhead_share": ("<=", 0.10),
    "padding_grouped": ("<=", 0.10),
    "grouping_speedup": (">=", 1.0),
    "scaling_efficiency": (">=", 0.8),
    "ddp_ratio": (">=", 0.95),
    "fused_adamw_step": ("<", 1.0),
    "split_memory": ("<=", 0.25),
    "shapes_ratio": (">=", 0.95),
    "packed_padding": ("<=", 0.6),
    "packed_speedup": (">=", 1.05),
}
BENCHMARKS = ("train", "lone", "sweep", "sweep_workers", "teacher", "padding", "options", "split_memory", "shapes")


def quickstart_trial() -> dict:
    """What one quickstart sweep trial trains: student preset, batch, steps, CPUs per worker."""
    from ray_t2t.config.experiment import load_config

    cfg = load_config(QUICKSTART)
    return {
        "preset": cfg.models.student.preset,
        "batch_size": cfg.training.batch_size,
        "max_steps": cfg.training.max_steps,
        "threads": int((cfg.scaling.resources_per_worker or {}).get("CPU", 1)),
        "zero_stage": cfg.deepspeed.zero_stage,
        "top_k": cfg.soft_targets.top_k,
        "group_by_length": cfg.training.group_by_length,
        "local_mode": cfg.scaling.local_mode,
    }


def commands(quick: bool, trial: dict) -> dict[str, list[str]]:
    train = [
        "benchmarks/train_overhead.py",
        "--preset",
        trial["preset"],
        "--batch-size",
        str(trial["batch_size"]),
        "--threads",
        str(trial["threads"]),
        "--zero-stage",
        str(trial["zero_stage"]),
        "--scaling",
        "--local-mode",
        "--steps",
        "40" if quick else "160",
        "--rounds",
        "1" if quick else "2",
    ]
    teacher = [
        "benchmarks/teacher_inference.py",
        "--read",
        "--top-k",
        str(trial["top_k"]),
        "--kd-preset",
        trial["preset"],
        "--kd-batch-size",
        str(trial["batch_size"]),
        "--cores",
        "2",
    ]
    teacher += (
        ["--examples", "6000", "--rows-per-shard", "500", "--kd-steps", "20"]
        if quick
        else ["--examples", "100000", "--kd-steps", "150"]
    )
    options = [
        "benchmarks/loop_options.py",
        "--preset",
        trial["preset"],
        "--batch-size",
        str(trial["batch_size"]),
        "--threads",
        str(trial["threads"]),
        "--variants",
        "default,fused_adamw,eager_attention",
        "--steps",
        "10" if quick else "80",
        "--rounds",
        "1" if quick else "2",
    ]
    lone = [
        "benchmarks/lone_run.py",
        "--preset",
        trial["preset"],
        "--batch-size",
        str(trial["batch_size"]),
        "--threads",
        str(trial["threads"]),
    ]
    lone += ["--steps", "5", "--rounds", "1"] if quick else ["--steps", "50", "--rounds", "2"]
    sweep = [
        "benchmarks/sweep_overhead.py",
        "--preset",
        trial["preset"],
        "--batch-size",
        str(trial["batch_size"]),
        "--threads",
        str(trial["threads"]),
        "--concurrency",
        "2",
    ]
    sweep += ["--trials", "4", "--steps", "10"] if quick else ["--trials", "6", "--steps", "100"]
    memory = ["benchmarks/split_memory.py", "--examples", "100000" if quick else "1000000"]
    shapes = ["benchmarks/shapes.py", "--tiny", "--presets", "gpt2-0.5m,llama-2m"]
    shapes += ["--steps", "4", "--rounds", "1"] if quick else ["--steps", "20", "--rounds", "2"]
    found = {
        "train": train,
        "lone": lone,
        "sweep": sweep,
        "teacher": teacher,
        "options": options,
        "split_memory": memory,
        "shapes": shapes,
    }
    if trial["local_mode"]:  # the quickstart's sweep against the same sweep on Ray Train workers
        found["sweep_workers"] = sweep + ["--set", "scaling.local_mode=false"]
    return found


def run_script(name: str, argv: list[str], json_path: Path, log, timeout_s: float) -> dict | None:
    """Run one benchmark script in its own process; its figures, or None if it failed."""
    command = [sys.executable, *argv, "--json", str(json_path)]
    log.write(f"\n===== {name}: {' '.join(command)}\n")
    log.flush()
    started = time.perf_counter()
    print(f"[bench] {name}: {' '.join(argv)}", flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    load = loadavg()
    # its own session: on a timeout the whole group goes, Ray's processes included
    process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        ok = process.wait(timeout=timeout_s) == 0 and json_path.is_file()
    except subprocess.TimeoutExpired:
        ok = False
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.write(f"\n===== {name}: timed out after {timeout_s:.0f} s\n")
    seconds = time.perf_counter() - started
    print(f"[bench] {name}: {'done' if ok else 'FAILED (see the log)'} in {seconds:.0f} s", flush=True)
    if not ok:
        return None
    figures = json.loads(json_path.read_text())
    figures["wall_s"] = seconds
    figures["loadavg"] = {"before": load, "after": loadavg()}
    return figures


def padding(trial: dict, quick: bool = False) -> dict:
    """Pad share of one epoch of a quickstart run's batches, with and without length grouping; and
    tokens/s of a plain loop over batches grouped by the loop's keys vs by source + target length."""
    from ray_t2t.config.experiment import load_config
    from ray_t2t.data import Split, prepare_data

    with tempfile.TemporaryDirectory(prefix="ray_t2t_bench_padding_") as folder:
        cfg = load_config(
            QUICKSTART,
            [
                f"run.storage_path={folder}",
                f"training.batch_size={trial['batch_size']}",
                f"models.student.preset={trial['preset']}",
            ],
        )
        prepared = prepare_data(cfg)
        train = Split(prepared, "train")
        waste = padding_waste(
            [len(s) for s in train.source_ids], [len(t) for t in train.target_ids], trial["batch_size"], seed=cfg.seed
        )
        speed = grouping_speed(cfg, prepared, steps=10 if quick else 100, rounds=1 if quick else 2)
    return {"examples": len(train.source_ids), "batch_size": trial["batch_size"], **waste, "speed": speed}


def rows_of(results: dict, trial: dict) -> list[dict]:
    """The table: figure, value, baseline, ratio, goal, result."""
    rows = []

    def add(figure, key, value=None, baseline=None, ratio=None, judged=None):
        op, goal = GOALS[key] if key else (None, None)
        rows.append(
            {
                "figure": figure,
                "key": key,
                "value": value,
                "baseline": baseline,
                "ratio": ratio,
                "goal": f"{op} {goal:g}" if key else None,
                "result": verdict(judged, op, goal) if key else None,
                "judged": judged,
            }
        )

    train = results.get("train")
    if train:
        add(
            "training tokens/s: ray_t2t loop vs plain PyTorch",
            "train_ratio",
            f"{train['ray_t2t_tokens_per_s']:,.0f}",
            f"{train['pytorch_best_tokens_per_s']:,.0f}",
            f"{train['ratio']:.3f}",
            train["ratio"],
        )
        if "local_mode_ratio" in train:
            add(
                "training tokens/s: ray_t2t loop in local mode (the quickstart's) vs plain PyTorch",
                "local_mode_ratio",
                f"{train['local_mode_tokens_per_s']:,.0f}",
                f"{train['pytorch_best_tokens_per_s']:,.0f}",
                f"{train['local_mode_ratio']:.3f}",
                train["local_mode_ratio"],
            )
        qs_train_s = trial["max_steps"] * train["tokens_per_step"] / train["ray_t2t_tokens_per_s"]
        overhead = train["startup_s"] + train["teardown_s"]
        train["quickstart_train_s_estimate"] = qs_train_s
        train["overhead_share"] = overhead / qs_train_s
        add("fixed overhead of a single run: submit -> first step", None, f"{train['startup_s']:.1f} s")
        parts = train.get("startup_parts_s")
        if parts:
            add("  of which Ray Train: submit -> worker process started", None, f"{parts['ray_train_s']:.1f} s")
            add("  of which the worker's Ray: process -> training function", None, f"{parts['ray_worker_s']:.1f} s")
            add("  of which ray_t2t: training function -> first step", None, f"{parts['ray_t2t_s']:.1f} s")
        add("fixed overhead of a single run: last step -> record written", None, f"{train['teardown_s']:.1f} s")
        add(
            "(a single run: fixed overhead / a quickstart trial's training time alone)",
            None,
            f"{overhead:.1f} s",
            f"{qs_train_s:.0f} s",
            f"{train['overhead_share']:.3f}",
        )
        if "scaling_efficiency" in train:
            add(
                "scaling: tokens/s, 2 workers vs 2 x 1 worker (1 CPU each)",
                "scaling_efficiency",
                f"{train['two_workers_tokens_per_s']:,.0f}",
                f"{2 * train['ray_t2t_tokens_per_s']:,.0f}",
                f"{train['scaling_efficiency']:.3f}",
                train["scaling_efficiency"],
            )
            add(
                "scaling: ray_t2t 2 workers vs a plain 2-process DDP loop",
                "ddp_ratio",
                f"{train['two_workers_tokens_per_s']:,.0f}",
                f"{train['ddp_tokens_per_s']:,.0f}",
                f"{train['ddp_ratio']:.3f}",
                train["ddp_ratio"],
            )
            add(
                "(what the machine allows: plain DDP vs 2 x plain loop)",
                None,
                f"{train['ddp_tokens_per_s']:,.0f}",
                f"{2 * train['pytorch_best_tokens_per_s']:,.0f}",
                f"{train['ddp_efficiency']:.3f}",
            )
    lone = results.get("lone")
    if lone:
        local, workers = lone["best"]["local_mode"], lone["best"]["workers"]
        mode = "local mode, no Ray, as the quickstart" if lone["quickstart_local_mode"] else "local mode, no Ray"
        add(
            f"a lone `ray-t2t train` ({mode}) vs on a Ray Train worker: launch -> first step",
            None,
            f"{local['startup_s']:.1f} s",
            f"{workers['startup_s']:.1f} s",
            f"{lone['startup_ratio']:.3f}",
        )
        ends = {name: best["teardown_s"] + best["exit_s"] for name, best in lone["best"].items()}
        add(
            "(the same: last step -> the command exits)",
            None,
            f"{ends['local_mode']:.1f} s",
            f"{ends['workers']:.1f} s",
            f"{ends['local_mode'] / ends['workers']:.3f}",
        )
        add(
            "(the same: training tokens/s)",
            None,
            f"{local['tokens_per_s']:,.0f}",
            f"{workers['tokens_per_s']:,.0f}",
            f"{lone['tokens_per_s_ratio']:.3f}",
        )
    sweep = results.get("sweep")
    if sweep:
        # the quickstart's trials train 2 at a time, as these did: their tokens/s, not a lone run's
        qs_train_s = trial["max_steps"] * sweep["tokens_per_step"] / sweep["tokens_per_s"]
        sweep["quickstart_train_s_estimate"] = qs_train_s
        sweep["overhead_share"] = sweep["overhead_s"] / qs_train_s
        add(
            "fixed overhead per sweep trial, 2 at a time: slot freed -> first step", None, f"{sweep['startup_s']:.1f} s"
        )
        parts = sweep.get("startup_parts_s")
        if parts:
            add(
                "  of which Tune, Ray Train: slot freed -> worker process started",
                None,
                f"{parts['until_worker_process_s']:.1f} s",
            )
            add(
                "  of which the worker's Ray: process -> training function",
                None,
                f"{parts['worker_process_to_function_s']:.1f} s",
            )
            add(
                "  of which ray_t2t: training function -> first step",
                None,
                f"{parts['function_to_first_step_s']:.1f} s",
            )
        add("fixed overhead per sweep trial: last step -> record written", None, f"{sweep['teardown_s']:.1f} s")
        add(
            "fixed overhead / quickstart trial's training time (2 at a time)",
            "overhead_share",
            f"{sweep['overhead_s']:.1f} s",
            f"{qs_train_s:.0f} s",
            f"{sweep['overhead_share']:.3f}",
            sweep["overhead_share"],
        )
    workers = results.get("sweep_workers")
    if workers:
        add(
            "(the same sweep on Ray Train workers: fixed overhead per trial)",
            None,
            f"{workers['overhead_s']:.1f} s",
            f"{workers['startup_s']:.1f} + {workers['teardown_s']:.1f} s",
        )
        if sweep:
            add(
                "(fixed overhead per sweep trial: as the quickstart runs it vs on Ray Train workers)",
                None,
                f"{sweep['overhead_s']:.1f} s",
                f"{workers['overhead_s']:.1f} s",
                f"{sweep['overhead_s'] / workers['overhead_s']:.3f}",
            )
            add(
                "(whole sweep wall time: as the quickstart runs it vs on Ray Train workers)",
                None,
                f"{sweep['sweep_wall_s']:.0f} s",
                f"{workers['sweep_wall_s']:.0f} s",
                f"{sweep['sweep_wall_s'] / workers['sweep_wall_s']:.3f}",
            )
    teacher = results.get("teacher")
    if teacher:
        add(
            "teacher inference tokens/s: Ray Data vs plain loop, end to end",
            "teacher_ratio",
            f"{teacher['ray_data_tokens_per_s']:,.0f}",
            f"{teacher['plain_process_tokens_per_s']:,.0f}",
            f"{teacher['ratio']:.3f}",
            teacher["ratio"],
        )
        add(
            "teacher inference tokens/s: Ray Data vs plain loop, once started",
            "teacher_steady_ratio",
            f"{teacher['ray_data_steady_tokens_per_s']:,.0f}",
            f"{teacher['plain_tokens_per_s']:,.0f}",
            f"{teacher['steady_ratio']:.3f}",
            teacher["steady_ratio"],
        )
        add(
            f"soft-target shard bytes per target token (k = {teacher['top_k']})",
            "bytes_per_target_token",
            f"{teacher['bytes_per_target_token']:.1f}",
            judged=teacher["bytes_per_target_token"],
        )
        if "read" in teacher:
            add(
                "shard read + decode tokens/s vs kd_logits training tokens/s",
                "read_ratio",
                f"{teacher['read']['tokens_per_s']:,.0f}",
                f"{teacher['kd_logits_tokens_per_s']:,.0f}",
                f"{teacher['read_ratio']:.1f}x",
                teacher["read_ratio"],
            )
    pad = results.get("padding")
    if pad:
        grouped, ungrouped = pad["grouped"]["pad_share"], pad["ungrouped"]["pad_share"]
        add(
            "padding share of batch tokens: length-grouped vs not",
            "padding_grouped",
            f"{grouped:.1%}",
            f"{ungrouped:.1%}",
            f"{grouped / ungrouped:.3f}" if ungrouped else None,
            grouped,
        )
        if "speed" in pad:
            speed = pad["speed"]
            add(
                "real tokens/s, plain loop: grouped by (source, target) vs by source + target",
                "grouping_speedup",
                f"{speed['keys_tokens_per_s']:,.0f}",
                f"{speed['sum_tokens_per_s']:,.0f}",
                f"{speed['speedup']:.3f}",
                speed["speedup"],
            )
    options = results.get("options")
    if options:
        best = options["best"]
        default, fused = best["default"], best.get("fused_adamw")
        if fused:
            ratio = fused["optimizer_ms"] / default["optimizer_ms"]
            add(
                "optimizer step ms: fused AdamW (the loop's) vs torch's default AdamW",
                "fused_adamw_step",
                f"{fused['optimizer_ms']:.2f} ms",
                f"{default['optimizer_ms']:.2f} ms",
                f"{ratio:.3f}",
                ratio,
            )
            speed = fused["tokens_per_s"] / default["tokens_per_s"]
            add(
                "(plain loop tokens/s with fused AdamW vs default)",
                None,
                f"{fused['tokens_per_s']:,.0f}",
                f"{default['tokens_per_s']:,.0f}",
                f"{speed:.3f}",
            )
        eager = best.get("eager_attention")
        if eager:
            add(
                "(plain loop tokens/s: eager attention vs SDPA, transformers' default)",
                None,
                f"{eager['tokens_per_s']:,.0f}",
                f"{default['tokens_per_s']:,.0f}",
                f"{eager['tokens_per_s'] / default['tokens_per_s']:.3f}",
            )
    shapes = results.get("shapes")
    if shapes:
        rows_by_preset = {row["preset"]: row for row in shapes["presets"]}
        lowest = min(rows_by_preset.values(), key=lambda row: row["plain_ratio"])
        add(
            f"training tokens/s at instruction-like shapes, ray_t2t loop vs plain PyTorch (lower of "
            f"{', '.join(rows_by_preset)}: {lowest['preset']})",
            "shapes_ratio",
            f"{lowest['runs']['loop']['tokens_per_s']:,.0f}",
            f"{lowest['runs']['plain']['tokens_per_s']:,.0f}",
            f"{lowest['plain_ratio']:.3f}",
            lowest["plain_ratio"],
        )
        for preset, row in rows_by_preset.items():
            padding = row["padding"]
            add(
                f"{preset}: padding share of batch tokens, packed vs padded",
                "packed_padding",
                f"{padding['packed']:.1%}",
                f"{padding['padded']:.1%}",
                f"{padding['packed'] / padding['padded']:.3f}",
                padding["packed"] / padding["padded"],
            )
            add(
                f"{preset}: real tokens/s of the ray_t2t loop, packed vs padded",
                "packed_speedup",
                f"{row['runs']['packed']['tokens_per_s']:,.0f}",
                f"{row['runs']['loop']['tokens_per_s']:,.0f}",
                f"{row['packed_speedup']:.3f}",
                row["packed_speedup"],
            )
    memory = results.get("split_memory")
    if memory:
        views, lists = memory["views"], memory["lists"]
        add(
            f"worker memory of a {memory['examples']:,}-example split, its own: memory-mapped views vs Python lists",
            "split_memory",
            f"{views['anonymous_mb']:,.0f} MB",
            f"{lists['anonymous_mb']:,.0f} MB",
            f"{memory['anonymous_ratio']:.3f}",
            memory["anonymous_ratio"],
        )
        add(
            "(the same, resident: the mapped file's pages are shared by the node's workers)",
            None,
            f"{views['rss_mb']:,.0f} MB",
            f"{lists['rss_mb']:,.0f} MB",
            f"{memory['rss_ratio']:.3f}",
        )
        add(
            "(an epoch of reads, shuffled: views vs lists, s)",
            None,
            f"{views['read_s']:.1f}",
            f"{lists['read_s']:.1f} + {lists['load_s']:.1f} to build",
            f"{memory['read_ratio']:.2f}",
        )
    return rows


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results.json"), help="results file (JSON)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not figures to report")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {BENCHMARKS}")
    parser.add_argument("--timeout", type=float, default=720, help="seconds allowed per benchmark process")
    args = parser.parse_args()
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(BENCHMARKS)}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path = out.with_suffix(".log")
    trial = quickstart_trial()
    argvs = commands(args.quick, trial)
    results: dict = {}
    load_before = loadavg()
    started, started_unix = time.perf_counter(), time.time()
    with log_path.open("w") as log, tempfile.TemporaryDirectory(prefix="ray_t2t_bench_") as scratch:
        for name in only:
            if name == "padding":
                print("[bench] padding: quickstart batches with and without length grouping", flush=True)
                results[name] = padding(trial, args.quick)
            elif name in argvs:  # sweep_workers only when the quickstart's sweep runs in local mode
                results[name] = run_script(name, argvs[name], Path(scratch) / f"{name}.json", log, args.timeout)
    wall_s = time.perf_counter() - started
    rows = rows_of(results, trial)
    summary = {
        "started_unix": started_unix,
        "wall_s": wall_s,
        "quick": args.quick,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_before": load_before,
            "loadavg_after": loadavg(),
        },
        "commands": {name: " ".join(argv) for name, argv in argvs.items() if name in only},
        "quickstart_trial": trial,
        "figures": rows,
        "raw": results,
        "failed": [name for name in only if name in results and results[name] is None],
        "passed": all(row["result"] != "FAIL" for row in rows),
    }
    out.write_text(json.dumps(summary, indent=1))
    print()
    print(format_table(rows))
    print(
        f"\n{len(rows)} figures, {sum(r['result'] == 'FAIL' for r in rows)} below goal"
        + (f", benchmark(s) failed: {', '.join(summary['failed'])}" if summary["failed"] else "")
        + f"; {wall_s / 60:.1f} min; load average {load_before} before, {summary['machine']['loadavg_after']} after"
    )
    print(f"results {out}, log {log_path}")
    if summary["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
