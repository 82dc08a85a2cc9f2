"""Where do 2 ray_t2t workers lose against a hand-written DDP loop? The same 2-process job, one step
removed at a time, alternated `--rounds` times (each variant's figure its best round):

  ddp          the plain loop under DistributedDataParallel, processes unpinned (the make bench baseline)
  ddp_pinned   the same, each rank pinned to a core of its own, as ray_t2t places its workers
  ddp_nice     the same pinned, at nice 15, as Ray starts its workers
  deepspeed    the ray_t2t loop (DeepSpeed) in 2 processes without Ray, pinned as run_worker pins
  ray_train    the ray_t2t loop on 2 Ray Train workers (what make bench's scaling rows run)
  deepspeed_zero1, deepspeed_zero2   the deepspeed variant at ZeRO stage 1 or 2 (optional)

    .venv/bin/python benchmarks/ddp_gap.py [--preset t5-0.5m] [--batch-size 128] [--steps 160] [--rounds 2]
                                           [--zero-stage 0] [--variants ddp,ddp_pinned,...] [--json FILE]

Read down the list: ddp_pinned / ddp is the cost of pinning, deepspeed / ddp_pinned DeepSpeed's
against plain DDP on the same placement, ray_train / deepspeed Ray's. Each side trains the same
model, batches (BatchOrder, 1 CPU thread a rank) and optimizer (fused AdamW) as the quickstart trial.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.suite import print_figures  # noqa: E402
from ray_t2t.config.experiment import validate_config  # noqa: E402
from ray_t2t.data import prepare_data  # noqa: E402

VARIANTS = ("ddp", "ddp_pinned", "ddp_nice", "deepspeed", "ray_train", "deepspeed_zero1", "deepspeed_zero2")


def _deepspeed_rank(rank: int, port: int, payload: dict) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    from ray_t2t.training.context import LocalContext
    from ray_t2t.training.loop import run_worker

    ctx = LocalContext(f"{payload['run_dir']}-rank{rank}")
    ctx.rank, ctx.local_rank, ctx.world_size = rank, rank, 2
    run_worker(payload, ctx)


def deepspeed_two_processes(cfg, prepared, run_dir: Path) -> float:
    """tokens/s of the ray_t2t loop as 2 processes on this machine, gloo over loopback, no Ray."""
    from benchmarks.suite import spawn_ranks, worker_payload

    payload = worker_payload(cfg, "scratch", prepared.path, run_dir)
    spawn_ranks(_deepspeed_rank, (payload,), 2, "the 2-process DeepSpeed loop")
    return json.loads((run_dir / "record.json").read_text())["tokens_per_s"]


def measure(args) -> dict:
    import ray

    from benchmarks.train_overhead import experiment, plain_ddp
    from ray_t2t.ray_cluster import ensure_ray
    from ray_t2t.training.launcher import train

    folder = Path(tempfile.mkdtemp(prefix="ray_t2t_ddp_gap_"))
    raw = experiment(folder, args)
    raw["deepspeed"]["config_overrides"] = json.loads(args.overrides)
    cfg = validate_config(raw)
    two = cfg.model_copy(update={"scaling": cfg.scaling.model_copy(update={"num_workers": 2})})
    prepared = prepare_data(cfg)
    wanted = args.variants.split(",")
    runs: dict[str, list[float]] = {name: [] for name in wanted}
    try:
        for round_ in range(args.rounds):
            for name in wanted:
                print(f"round {round_ + 1}/{args.rounds}: {name} ...", flush=True)
                if name == "ddp":
                    runs[name].append(plain_ddp(cfg, prepared, 1))
                elif name == "ddp_pinned":
                    runs[name].append(plain_ddp(cfg, prepared, 1, pin=True))
                elif name == "ddp_nice":
                    runs[name].append(plain_ddp(cfg, prepared, 1, pin=True, nice=15))
                elif name == "deepspeed":
                    runs[name].append(deepspeed_two_processes(two, prepared, folder / f"deepspeed-{round_}"))
                elif name.startswith("deepspeed_zero"):
                    stage = int(name[-1])
                    staged = two.model_copy(
                        update={"deepspeed": two.deepspeed.model_copy(update={"zero_stage": stage})}
                    )
                    runs[name].append(deepspeed_two_processes(staged, prepared, folder / f"{name}-{round_}"))
                elif name == "ray_train":
                    ensure_ray(use_gpu=False)
                    record = train(two, "scratch", run_name=f"two-{round_}", log=lambda message: None)
                    runs[name].append(record["tokens_per_s"])
    finally:
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    best = {name: max(values) for name, values in runs.items()}
    return {
        "preset": args.preset,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "zero_stage": args.zero_stage,
        "rounds": args.rounds,
        "runs_tokens_per_s": runs,
        "best_tokens_per_s": best,
        "against_ddp": {name: value / best["ddp"] for name, value in best.items()} if "ddp" in best else None,
    }


def report(figures: dict) -> str:
    lines = [
        f"{figures['preset']}, batch {figures['batch_size']} a rank, {figures['steps']} steps, ZeRO "
        f"{figures['zero_stage']}, 2 processes of 1 CPU thread, best of {figures['rounds']} rounds",
        f"{'variant':<12}{'tokens/s':>10}{'vs ddp':>8}{'vs the row above':>18}",
    ]
    previous = None
    for name, value in figures["best_tokens_per_s"].items():
        against = figures["against_ddp"] or {}
        step = f"{value / previous:.3f}" if previous else "-"
        lines.append(f"{name:<12}{value:>10,.0f}{against.get(name, float('nan')):>8.3f}{step:>18}")
        previous = value
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="t5-0.5m")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--zero-stage", type=int, default=0, choices=[0, 1, 2, 3])
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--overrides", default="{}", help="deepspeed.config_overrides as JSON (default none)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {VARIANTS}")
    parser.add_argument("--json", help="write the figures to this file")
    return parser


def main() -> None:
    args = parser().parse_args()
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    print_figures(measure(args), report, args.json)


if __name__ == "__main__":
    main()
