"""Is the ray_t2t training loop as fast as a hand-written PyTorch loop? And what does starting it cost?

    .venv/bin/python benchmarks/train_overhead.py [--steps 300] [--preset t5-0.5m] [--batch-size 64]
                                                  [--threads 1] [--zero-stage 0] [--rounds 2] [--scaling]

The same model (same preset, seed and initial weights), the same batches (same BatchOrder) and the same
optimizer settings run in one process: a minimal PyTorch loop and the ray_t2t loop on Ray Train +
DeepSpeed (1 worker), alternated `--rounds` times. On a shared machine a run is slowed by whatever
else runs, never sped up, so each side's figure is its best round. Prints tokens/s of each and the
ratio ray_t2t / PyTorch (goal >= 0.95 once started), then the fixed costs around the first ray_t2t
run: submit -> first step, and last step -> run record written.

With --local-mode, each round also runs the ray_t2t loop in Ray Train's local mode (scaling.local_mode,
as the quickstart trains: in this process, Ray running) against the same plain loop.

With --scaling, each round also runs the ray_t2t loop with 2 workers of `--threads` CPUs each (same
per-worker batch) and a hand-written 2-process DistributedDataParallel loop (gloo, same batches per
rank): efficiency = tokens/s(2 workers) / (2 x tokens/s(1 worker)), and ray_t2t's 2 workers vs the
DDP loop. The DDP loop's own efficiency against 2 x the plain loop is what the machine allows.
`measure(args)` returns the figures (benchmarks/run_all.py runs this file with --json).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ray_t2t.config.experiment import validate_config  # noqa: E402
from ray_t2t.data import prepare_data  # noqa: E402


def experiment(folder: Path, args) -> dict:
    return {
        "run": {"name": "bench", "storage_path": str(folder), "checkpoint_every_n_steps": args.steps},
        "data": {
            "split_sizes": {"train": 20000, "validation": 64, "test": 64},
            "max_source_length": 32,
            "max_target_length": 32,
        },
        "models": {"student": {"preset": args.preset}},
        "methods": [{"name": "scratch"}],
        "training": {"batch_size": args.batch_size, "max_steps": args.steps, "learning_rate": 1e-3, "warmup_steps": 20},
        "eval": {"every_n_steps": args.steps, "batch_size": 64},
        "scaling": {"num_workers": 1, "resources_per_worker": {"CPU": args.threads}},
        "deepspeed": {"zero_stage": args.zero_stage},
    }


def plain_loop(
    cfg, prepared, threads: int, world_size: int = 1, rank: int = 0, device: str = "cpu", compile: bool = False
) -> tuple[int, float]:
    """(tokens, seconds) of a minimal loop: fused AdamW, same schedule, clipping, batches and model. With
    world_size > 1 (a gloo process group already up) the model is wrapped in DistributedDataParallel
    and this rank trains on its share of the batches, as a ray_t2t worker does. On a GPU (device
    "cuda") under bf16 autocast, as a mixed-precision loop runs (benchmarks/gpu_mfu.py). `compile`:
    the model through torch.compile(dynamic=True) (its compilation counted in the seconds)."""
    import torch

    from benchmarks.suite import step_batches
    from ray_t2t.methods import Setup, collate
    from ray_t2t.models import build_model, is_encoder_decoder
    from ray_t2t.training.loop import lr_factor

    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    setup = Setup(cfg, cfg.methods[0], prepared.tokenizer(), seed=cfg.seed)
    model, _ = build_model(cfg.models.student, setup.tokenizer, seed=cfg.seed)
    setup.encoder_decoder = is_encoder_decoder(model)
    model.to(device).train()
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    forward = torch.compile(model, dynamic=True) if compile else model
    batches = step_batches(
        prepared,
        cfg.training.batch_size,
        setup.encoder_decoder,
        cfg.seed,
        world_size,
        rank,
        group_by_length=cfg.training.group_by_length,
    )
    # fused, as the ray_t2t loop's: the ratio measures the loop, not a choice of kernels
    # (benchmarks/loop_options.py measures fused against torch's default)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.training.learning_rate, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
    tokens, started = 0, time.perf_counter()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")
    for sources, targets in itertools.islice(batches, cfg.training.max_steps):
        batch = {key: value.to(device, non_blocking=True) for key, value in collate(setup, sources, targets).items()}
        with autocast:
            loss = forward(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.deepspeed.gradient_clipping)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += sum(len(s) + len(t) for s, t in zip(sources, targets))
    if device == "cuda":
        torch.cuda.synchronize()  # GPU work is queued: wait for it before reading the clock
    return tokens, time.perf_counter() - started


def plain_pytorch(cfg, prepared, threads: int) -> float:
    """tokens/s of the plain loop in this process."""
    tokens, seconds = plain_loop(cfg, prepared, threads)
    return tokens / seconds


def _ddp_rank(
    rank: int, port: int, world_size: int, raw: dict, prepared, threads: int, results, pin: bool, nice: int
) -> None:
    import os

    import torch
    import torch.distributed as dist

    if pin:  # a core of its own, as ray_t2t's placement gives each worker
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[rank % len(os.sched_getaffinity(0))]})
    if nice:
        os.nice(nice)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        tokens, seconds = plain_loop(validate_config(raw), prepared, threads, world_size, rank)
        total = torch.tensor([float(tokens), seconds], dtype=torch.float64)
        dist.all_reduce(total[:1])  # all ranks' tokens
        dist.all_reduce(total[1:], op=dist.ReduceOp.MAX)  # the slowest rank's time
        if rank == 0:
            results.put(float(total[0] / total[1]))
    finally:
        dist.destroy_process_group()


def plain_ddp(cfg, prepared, threads: int, world_size: int = 2, pin: bool = False, nice: int = 0) -> float:
    """tokens/s of the plain loop as a hand-written DistributedDataParallel job: `world_size`
    processes on this machine, gloo over loopback, `threads` CPU threads each; `pin`: each on a core
    of its own; `nice`: at that nice level (Ray starts its workers at 15)."""
    import torch.multiprocessing as mp

    from benchmarks.suite import spawn_ranks

    results = mp.get_context("spawn").Queue()
    raw = cfg.model_dump(mode="json")  # as JSON: the config's class is built at run time and does not pickle
    args = (world_size, raw, prepared, threads, results, pin, nice)
    spawn_ranks(_ddp_rank, args, world_size, "the plain DDP loop")
    return results.get(timeout=10)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--preset", default="t5-0.5m")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of both loops (Ray: CPUs per worker)")
    parser.add_argument("--zero-stage", type=int, default=0)
    parser.add_argument(
        "--scaling", action="store_true", help="also run the ray_t2t loop with 2 workers and a plain 2-process DDP loop"
    )
    parser.add_argument(
        "--local-mode",
        action="store_true",
        help="also run the ray_t2t loop in Ray Train's local mode (scaling.local_mode: in this process)",
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternations of the loops; each figure is its best round"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    return parser


def measure(args) -> dict:
    """`args.rounds` rounds of: plain loop, ray_t2t loop (1 worker), with args.local_mode the ray_t2t
    loop in Ray Train's local mode (in this process), and with args.scaling the plain DDP loop and the
    ray_t2t loop with 2 workers. Each figure is its best round."""
    import ray

    from ray_t2t.ray_cluster import ensure_ray
    from ray_t2t.training.launcher import train

    folder = Path(tempfile.mkdtemp(prefix="ray_t2t_bench_"))
    cfg = validate_config(experiment(folder, args))
    two = cfg.model_copy(update={"scaling": cfg.scaling.model_copy(update={"num_workers": 2})})
    local = cfg.model_copy(update={"scaling": cfg.scaling.model_copy(update={"local_mode": True})})
    prepared = prepare_data(cfg)
    runs: dict[str, list[float]] = {"pytorch": [], "ray_t2t": [], "ray_t2t_local": [], "ddp": [], "ray_t2t_2": []}
    first = None
    try:
        for round_ in range(args.rounds):
            runs["pytorch"].append(plain_pytorch(cfg, prepared, args.threads))
            if args.scaling:
                runs["ddp"].append(plain_ddp(cfg, prepared, args.threads))
            ensure_ray(use_gpu=False)
            submitted = time.time()
            record = train(cfg, "scratch", run_name=f"scratch-{round_}", log=lambda message: None)
            if first is None:
                first = record, submitted, time.time()
            runs["ray_t2t"].append(record["tokens_per_s"])
            if args.local_mode:
                in_process = train(local, "scratch", run_name=f"scratch-local-{round_}", log=lambda message: None)
                runs["ray_t2t_local"].append(in_process["tokens_per_s"])
            if args.scaling:
                scaled = train(two, "scratch", run_name=f"scratch-2-workers-{round_}", log=lambda message: None)
                runs["ray_t2t_2"].append(scaled["tokens_per_s"])
    finally:
        ray.shutdown()
        shutil.rmtree(folder, ignore_errors=True)

    best = {name: max(values) for name, values in runs.items() if values}
    record, submitted, returned = first
    stamps = record["timestamps"]
    figures = {
        "preset": args.preset,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "threads": args.threads,
        "zero_stage": args.zero_stage,
        "rounds": args.rounds,
        "pytorch_tokens_per_s": runs["pytorch"],
        "ray_t2t_runs_tokens_per_s": runs["ray_t2t"],
        "pytorch_best_tokens_per_s": best["pytorch"],
        "ray_t2t_tokens_per_s": best["ray_t2t"],
        "ratio": best["ray_t2t"] / best["pytorch"],
        "startup_s": stamps["first_step"] - submitted,
        "startup_parts_s": startup_parts(stamps, submitted),
        "teardown_s": stamps["record_written"] - stamps["last_step"],
        "driver_return_s": returned - stamps["record_written"],
        "train_s": record["times"]["train_s"],
        "tokens_per_step": record["data"]["tokens_seen"] / record["steps"]["done"],
    }
    if args.local_mode:
        figures |= {
            "local_mode_runs_tokens_per_s": runs["ray_t2t_local"],
            "local_mode_tokens_per_s": best["ray_t2t_local"],
            "local_mode_ratio": best["ray_t2t_local"] / best["pytorch"],
        }
    if args.scaling:
        figures |= {
            "two_workers_runs_tokens_per_s": runs["ray_t2t_2"],
            "ddp_runs_tokens_per_s": runs["ddp"],
            "two_workers_tokens_per_s": best["ray_t2t_2"],
            "ddp_tokens_per_s": best["ddp"],
            "scaling_efficiency": best["ray_t2t_2"] / (2 * best["ray_t2t"]),
            "ddp_ratio": best["ray_t2t_2"] / best["ddp"],
            "ddp_efficiency": best["ddp"] / (2 * best["pytorch"]),
        }
    return figures


def startup_parts(stamps: dict, submitted: float) -> dict | None:
    """submit -> first step in three: Ray Train until the worker's process exists (controller and
    its actors), that process until Ray calls the training function (importing Ray, joining the
    group, torch.distributed), and ray_t2t's part (its imports, model, engine, step-0 validation)."""
    if stamps.get("process_start") is None or stamps.get("function_start") is None:
        return None
    return {
        "ray_train_s": stamps["process_start"] - submitted,
        "ray_worker_s": stamps["function_start"] - stamps["process_start"],
        "ray_t2t_s": stamps["first_step"] - stamps["function_start"],
    }


def main() -> None:
    args = parser().parse_args()
    figures = measure(args)

    def runs(values):
        return "  ".join(f"{v:,.0f}" for v in values)

    print(
        f"model {args.preset}, batch {args.batch_size}, {args.steps} steps, {args.threads} thread(s), ZeRO {args.zero_stage}, "
        f"{args.rounds} round(s), best of each"
    )
    print(
        f"  plain PyTorch loop   {figures['pytorch_best_tokens_per_s']:10,.0f} tokens/s   (rounds: {runs(figures['pytorch_tokens_per_s'])})"
    )
    print(
        f"  ray_t2t loop         {figures['ray_t2t_tokens_per_s']:10,.0f} tokens/s   (rounds: {runs(figures['ray_t2t_runs_tokens_per_s'])})"
    )
    print(f"  ratio                {figures['ratio']:10.3f}   (goal >= 0.95)")
    if "local_mode_ratio" in figures:
        print(
            f"  ray_t2t, local mode  {figures['local_mode_tokens_per_s']:10,.0f} tokens/s   (rounds: "
            f"{runs(figures['local_mode_runs_tokens_per_s'])}); ratio {figures['local_mode_ratio']:.3f} (goal >= 0.95)"
        )
    print(
        f"  start-up             {figures['startup_s']:10.1f} s   submit -> first step (Ray, workers, model, engine, first eval)"
    )
    if figures["startup_parts_s"]:
        parts = figures["startup_parts_s"]
        print(
            f"    of which Ray Train {parts['ray_train_s']:8.1f} s   submit -> the worker's process starts (controller, its actors)"
        )
        print(
            f"    the worker's Ray   {parts['ray_worker_s']:8.1f} s   process start -> training function (Ray, worker group, torch.distributed)"
        )
        print(
            f"    ray_t2t            {parts['ray_t2t_s']:8.1f} s   training function -> first step (imports, model, engine, step-0 validation)"
        )
    print(
        f"  tear-down            {figures['teardown_s']:10.1f} s   last step -> record written (checkpoint, test, export)"
    )
    print(f"  driver return        {figures['driver_return_s']:10.1f} s   record written -> train() returns")
    print(f"  training             {figures['train_s']:10.1f} s   the steps themselves")
    if "scaling_efficiency" in figures:
        print(
            f"  plain DDP, 2 procs   {figures['ddp_tokens_per_s']:10,.0f} tokens/s   (rounds: {runs(figures['ddp_runs_tokens_per_s'])}); "
            f"efficiency {figures['ddp_efficiency']:.3f} = tokens/s(DDP) / (2 x tokens/s(plain))"
        )
        print(
            f"  ray_t2t, 2 workers   {figures['two_workers_tokens_per_s']:10,.0f} tokens/s   (rounds: {runs(figures['two_workers_runs_tokens_per_s'])}); "
            f"efficiency {figures['scaling_efficiency']:.3f} = tokens/s(2) / (2 x tokens/s(1))"
        )
        print(f"  ray_t2t 2 workers / plain DDP {figures['ddp_ratio']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
