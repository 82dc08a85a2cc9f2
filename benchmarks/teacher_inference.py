"""Is teacher inference on Ray Data as fast as a plain loop on the same cores? And how compact are the shards?

    .venv/bin/python benchmarks/teacher_inference.py [--examples 100000] [--preset t5-2m] [--cores 2]
                                                     [--rows-per-shard 1000] [--top-k 32] [--generations none]

The same teacher (a preset with seeded random weights, saved like a run's export), the same training
split and the same shard code run twice in one process on the same total cores:

- plain: a fresh Python process, `--cores` torch threads, writing every shard in turn
  (TeacherReplica.write_shard called in a loop: no Ray at all), as a user's own script would: end to
  end it is timed from its launch to its exit (importing torch and transformers, loading the teacher
  and the split included, as they are in each Ray Data replica), once started over its loop;
- Ray Data: `produce_soft_targets` with `--cores` replicas of one CPU each (map_batches over an actor
  pool), local Ray started beforehand (its start-up is reported apart, as it is paid once per session).

Prints tokens/s (source + target tokens through the teacher) of both, end to end (each side's
start-up included) and once started (the plain loop's shards; the replica pool's rate from the seconds
each shard took), the ratios Ray Data / plain (goal
>= 0.9), the fixed cost of the Ray Data job (submit -> first shard written: starting the actor
processes, importing torch and transformers, loading the teacher), and the shards' bytes per target
token (goal <= 100 at k = 32).

With --read, also how fast the shards feed training: reading and decoding them into the tensors
kd_logits trains on (load_soft_targets, then kd_logits.teacher_rows for every batch of an epoch;
tokens/s, source + target tokens), against the tokens/s the ray_t2t loop consumes training kd_logits
on them (`--kd-steps` steps of a `--kd-preset` student at batch `--kd-batch-size`, 1 worker of 1
CPU: a quickstart trial's settings; goal: reading >= 5x faster). `measure(args)` returns the
figures (benchmarks/run_all.py runs this file with --json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ray_t2t.config.experiment import validate_config  # noqa: E402
from ray_t2t.config.sections import ModelSpec  # noqa: E402
from ray_t2t.data import prepare_data  # noqa: E402


def experiment(folder: Path, args, teacher: Path | None) -> dict:
    raw = {
        "run": {"name": "bench", "storage_path": str(folder)},
        "data": {"split_sizes": {"train": args.examples, "validation": 64, "test": 64}},
        "models": {"student": {"preset": "t5-tiny"}},
        "soft_targets": {
            "top_k": args.top_k,
            "rows_per_shard": args.rows_per_shard,
            "batch_size": args.batch_size,
            "replicas": args.cores,
            "cpus_per_replica": 1,
            "generations": args.generations,
        },
    }
    if teacher is not None:
        raw["models"]["teacher"] = {"name_or_path": str(teacher)}
    return raw


def plain_loop(cfg, data_path: Path, teacher: Path, folder: Path, threads: int) -> tuple[float, int]:
    """Seconds and tokens of every shard written by this process with `threads` torch threads."""
    import torch

    from ray_t2t.soft_targets import TeacherReplica
    from ray_t2t.teachers import shard_name

    torch.set_num_threads(threads)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    replica = TeacherReplica(
        {
            "config": cfg.model_dump(mode="json"),
            "data_path": str(data_path),
            "teacher_path": str(teacher),
            "folder": str(folder),
        }
    )
    torch.set_num_threads(threads)  # the replica sets its own (cpus_per_replica); the plain loop uses all cores
    shards = -(-len(replica.source_ids) // cfg.soft_targets.rows_per_shard)
    for index in range(shards):
        replica.write_shard(index)
    seconds = time.perf_counter() - started
    tokens = sum(map(len, replica.source_ids)) + sum(map(len, replica.target_ids))
    assert len(list(folder.glob("shard-*.parquet"))) == shards and (folder / shard_name(0)).exists()
    return seconds, tokens


def plain_process(cfg, data_path: Path, teacher: Path, folder: Path, threads: int) -> dict:
    """plain_loop in a fresh Python process, as a user's script: seconds from its launch to its exit,
    the loop's own seconds, tokens."""
    job = json.dumps(
        {
            "config": cfg.model_dump(mode="json"),
            "data_path": str(data_path),
            "teacher": str(teacher),
            "folder": str(folder),
            "threads": threads,
        }
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--plain-job", job], capture_output=True, text=True)
    process_s = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"the plain loop's process failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    loop_s, tokens = json.loads(done.stdout.strip().splitlines()[-1])
    return {"process_s": process_s, "loop_s": loop_s, "tokens": tokens}


def run_plain_job(job: str) -> None:
    """The child of plain_process (`job`: its JSON): the loop, then its seconds and tokens as JSON on the
    last line."""
    spec = json.loads(job)
    seconds, tokens = plain_loop(
        validate_config(spec["config"]),
        Path(spec["data_path"]),
        Path(spec["teacher"]),
        Path(spec["folder"]),
        spec["threads"],
    )
    print(json.dumps([seconds, tokens]))


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=100000)
    parser.add_argument("--preset", default="t5-2m")
    parser.add_argument("--cores", type=int, default=2, help="total CPU cores of both (Ray: replicas of 1 CPU)")
    parser.add_argument("--rows-per-shard", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--top-k", type=int, default=32)
    parser.add_argument("--generations", default="none", choices=["none", "greedy", "beam"])
    parser.add_argument(
        "--read",
        action="store_true",
        help="also measure reading the shards vs the kd_logits training loop's consumption",
    )
    parser.add_argument("--kd-steps", type=int, default=150)
    parser.add_argument("--kd-preset", default="t5-0.5m")
    parser.add_argument("--kd-batch-size", type=int, default=128)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--plain-job", help=argparse.SUPPRESS)  # plain_process's child
    return parser


def kd_experiment(cfg, args) -> dict:
    """The same data, teacher and soft targets, a kd_logits student trained on them (1 worker, 1 CPU)."""
    raw = cfg.model_dump(mode="json")
    raw["models"]["student"] = {"preset": args.kd_preset}
    raw["methods"] = [{"name": "kd_logits", "alpha": 0.5, "temperature": 2.0, "top_k": args.top_k}]
    raw["training"] |= {"batch_size": args.kd_batch_size, "max_steps": args.kd_steps, "warmup_steps": 20}
    raw["eval"] |= {"every_n_steps": args.kd_steps, "batch_size": 64}
    raw["run"]["checkpoint_every_n_steps"] = args.kd_steps
    raw["scaling"] = {"num_workers": 1, "resources_per_worker": {"CPU": 1}}
    return raw


def measure(args) -> dict:
    """Plain loop, then Ray Data on the same cores (then, with args.read, the shard-read figures)."""
    import ray

    from ray_t2t.models import build_model
    from ray_t2t.ray_cluster import job_env_vars, start_local_ray
    from ray_t2t.soft_targets import produce_soft_targets

    folder = Path(tempfile.mkdtemp(prefix="ray_t2t_teacher_bench_"))
    prepared = prepare_data(validate_config(experiment(folder, args, None)), log=lambda m: None)
    teacher_dir = folder / "teacher"
    model, _ = build_model(ModelSpec(preset=args.preset), prepared.tokenizer(), seed=0)
    model.save_pretrained(teacher_dir)
    cfg = validate_config(experiment(folder, args, teacher_dir))
    params = sum(p.numel() for p in model.parameters())

    plain = plain_process(cfg, prepared.path, teacher_dir, folder / "plain", args.cores)
    plain_s, tokens = plain["loop_s"], plain["tokens"]
    ray_start = time.perf_counter()
    # the environment ensure_ray gives a local Ray's workers, as the kd_logits run (--read) trains in this Ray
    start_local_ray(num_cpus=args.cores, runtime_env={"env_vars": job_env_vars(use_gpu=False, local=True)})
    ray_start_s = time.perf_counter() - ray_start
    submitted = time.time()
    started = time.perf_counter()
    manifest = produce_soft_targets(cfg, log=lambda m: None)
    ray_s = time.perf_counter() - started
    out = cfg.experiment_dir / "soft_targets" / manifest["teacher"]["label"]
    first_shard = min(p.stat().st_mtime for p in out.glob("shard-*.parquet"))
    shard_s = [s["seconds"] for s in manifest["shards"]]

    figures = {
        "preset": args.preset,
        "parameters": params,
        "examples": args.examples,
        "cores": args.cores,
        "top_k": args.top_k,
        "generations": args.generations,
        "tokens": tokens,
        # end to end: the plain process from launch to exit; Ray Data from submit to the manifest (Ray's
        # own start is apart, paid once per session)
        "plain_process_tokens_per_s": tokens / plain["process_s"],
        "ray_data_tokens_per_s": tokens / ray_s,
        "plain_process_s": plain["process_s"],
        "ray_data_s": ray_s,
        "ratio": plain["process_s"] / ray_s,
        "ray_start_s": ray_start_s,
        # once started: the plain loop's shards
        "plain_tokens_per_s": tokens / plain_s,
        "plain_s": plain_s,
        # once started: the replicas compute shards side by side, each at tokens / its busy seconds
        "ray_data_steady_tokens_per_s": tokens * args.cores / sum(shard_s),
        "first_shard_s": first_shard - submitted,
        "shard_seconds_mean": sum(shard_s) / len(shard_s),
        "shards": len(shard_s),
        "bytes_per_target_token": manifest["bytes_per_target_token"],
    }
    figures["steady_ratio"] = figures["ray_data_steady_tokens_per_s"] / figures["plain_tokens_per_s"]
    if args.read:
        from benchmarks.suite import read_soft_targets
        from ray_t2t.data import Split
        from ray_t2t.training.launcher import train

        train_split = Split(prepared, "train")
        read = read_soft_targets(
            out,
            train_split.source_ids,
            train_split.target_ids,
            args.kd_batch_size,
            args.top_k,
            manifest["identity"]["temperature"],
            2.0,
            seed=cfg.seed,
        )
        record = train(validate_config(kd_experiment(cfg, args)), "kd_logits", log=lambda m: None)
        figures |= {
            "read": read,
            "kd_logits_tokens_per_s": record["tokens_per_s"],
            "kd_logits_steps": record["steps"]["done"],
            "kd_logits_batch_size": args.kd_batch_size,
            "read_ratio": read["tokens_per_s"] / record["tokens_per_s"],
        }
    ray.shutdown()
    shutil.rmtree(folder, ignore_errors=True)
    return figures


def main() -> None:
    args = parser().parse_args()
    if args.plain_job:
        run_plain_job(args.plain_job)
        return
    figures = measure(args)
    params, tokens = figures["parameters"], figures["tokens"]
    print(
        f"teacher {args.preset} ({params / 1e6:.2f}M parameters), {args.examples:,} examples, {tokens:,} tokens, "
        f"{args.cores} cores, k={args.top_k}, generations {args.generations}"
    )
    print(
        f"  plain loop ({args.cores} threads)       {figures['plain_process_tokens_per_s']:10,.0f} tokens/s  "
        f"({figures['plain_process_s']:.1f} s from its process's launch to exit)"
    )
    print(
        f"  Ray Data ({args.cores} replicas x 1 CPU)  {figures['ray_data_tokens_per_s']:10,.0f} tokens/s  "
        f"({figures['ray_data_s']:.1f} s from submit)"
    )
    print(f"  ratio, end to end              {figures['ratio']:10.3f}   (goal >= 0.9)")
    print(
        f"  plain loop once started        {figures['plain_tokens_per_s']:10,.0f} tokens/s  "
        f"({figures['plain_s']:.1f} s; start-up {figures['plain_process_s'] - figures['plain_s']:.1f} s)"
    )
    print(f"  Ray Data once started          {figures['ray_data_steady_tokens_per_s']:10,.0f} tokens/s")
    print(f"  ratio, once started            {figures['steady_ratio']:10.3f}   (goal >= 0.9)")
    print(f"  Ray start (once per session)   {figures['ray_start_s']:10.1f} s")
    print(
        f"  submit -> first shard          {figures['first_shard_s']:10.1f} s   "
        f"(a shard takes {figures['shard_seconds_mean']:.1f} s; {figures['shards']} shards)"
    )
    print(
        f"  shards                         {figures['bytes_per_target_token']:10.1f} bytes per target token "
        f"(goal <= 100 at k = 32)"
    )
    if args.read:
        read = figures["read"]
        print(
            f"  shard read + decode            {read['tokens_per_s']:10,.0f} tokens/s   (load {read['load_s']:.1f} s, "
            f"batches {read['batches_s']:.1f} s: {read['batches_tokens_per_s']:,.0f} tokens/s)"
        )
        print(f"  kd_logits training consumes   {figures['kd_logits_tokens_per_s']:10,.0f} tokens/s")
        print(f"  ratio, read / consumed         {figures['read_ratio']:10.1f}x  (goal >= 5x)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
