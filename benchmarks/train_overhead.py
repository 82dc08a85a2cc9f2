"""Is the ray_t2t training loop as fast as a hand-written PyTorch loop? And what does starting it cost?

    .venv/bin/python benchmarks/train_overhead.py [--steps 300] [--preset t5-0.5m] [--batch-size 64]
                                                  [--threads 1] [--zero-stage 0]

The same model (same preset, seed and initial weights), the same batches (same BatchOrder) and the same
optimizer settings run three times in one process: a minimal PyTorch loop, the ray_t2t loop on Ray
Train + DeepSpeed (1 worker), and the PyTorch loop again (to see drift on a shared machine). Prints
tokens/s of each and the ratio ray_t2t / PyTorch (goal >= 0.95 once started), then the fixed costs
around the ray_t2t run: submit -> first step, and last step -> run record written.

With --scaling, the ray_t2t loop also runs with 2 workers of `--threads` CPUs each (same per-worker
batch), between the two plain loops: efficiency = tokens/s(2 workers) / (2 x tokens/s(1 worker)).
`measure(args)` returns the figures (benchmarks/run_all.py runs this file with --json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ray_t2t.config import validate_config  # noqa: E402
from ray_t2t.data import prepare_data  # noqa: E402


def experiment(folder: Path, args) -> dict:
    return {
        "run": {"name": "bench", "storage_path": str(folder), "checkpoint_every_n_steps": args.steps},
        "data": {"split_sizes": {"train": 20000, "validation": 64, "test": 64}, "max_source_length": 32,
                 "max_target_length": 32},
        "models": {"student": {"preset": args.preset}},
        "methods": [{"name": "scratch"}],
        "training": {"batch_size": args.batch_size, "max_steps": args.steps, "learning_rate": 1e-3, "warmup_steps": 20},
        "eval": {"every_n_steps": args.steps, "batch_size": 64},
        "scaling": {"num_workers": 1, "resources_per_worker": {"CPU": args.threads}},
        "deepspeed": {"zero_stage": args.zero_stage},
    }


def plain_pytorch(cfg, prepared, threads: int) -> float:
    """tokens/s of a minimal loop: AdamW, same schedule, clipping, batches and model."""
    import torch

    from ray_t2t.methods import Setup, collate
    from ray_t2t.models import build_model, is_encoder_decoder
    from ray_t2t.train.batch_order import BatchOrder, length_keys
    from ray_t2t.data import Split
    from ray_t2t.train.loop import lr_factor

    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    setup = Setup(cfg, cfg.methods[0], prepared.tokenizer(), seed=cfg.seed)
    model, _ = build_model(cfg.models.student, setup.tokenizer, seed=cfg.seed)
    setup.encoder_decoder = is_encoder_decoder(model)
    model.train()
    train = Split(prepared, "train")
    order = BatchOrder(length_keys(list(map(len, train.source_ids)), list(map(len, train.target_ids)),
                                   setup.encoder_decoder), cfg.training.batch_size, seed=cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.training.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
    tokens, started = 0, time.perf_counter()
    for step in range(cfg.training.max_steps):
        indices = order.indices(step)
        sources = [train.source_ids[i] for i in indices]
        targets = [train.target_ids[i] for i in indices]
        loss = model(**collate(setup, sources, targets)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.deepspeed.gradient_clipping)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += sum(len(s) + len(t) for s, t in zip(sources, targets))
    return tokens / (time.perf_counter() - started)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--preset", default="t5-0.5m")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of both loops (Ray: CPUs per worker)")
    parser.add_argument("--zero-stage", type=int, default=0)
    parser.add_argument("--scaling", action="store_true", help="also run the ray_t2t loop with 2 workers")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser


def measure(args) -> dict:
    """Plain loop, ray_t2t loop (1 worker; with args.scaling also 2 workers), plain loop again."""
    import ray

    from ray_t2t.train.launcher import ensure_ray, train

    folder = Path(tempfile.mkdtemp(prefix="ray_t2t_bench_"))
    cfg = validate_config(experiment(folder, args))
    prepared = prepare_data(cfg)
    before = plain_pytorch(cfg, prepared, args.threads)
    ensure_ray(use_gpu=False)
    submitted = time.time()
    record = train(cfg, "scratch", log=lambda message: None)
    returned = time.time()
    scaled = None
    if args.scaling:
        two = cfg.model_copy(update={"scaling": cfg.scaling.model_copy(update={"num_workers": 2})})
        scaled = train(two, "scratch", run_name="scratch-2-workers", log=lambda message: None)
    after = plain_pytorch(cfg, prepared, args.threads)
    ray.shutdown()
    shutil.rmtree(folder, ignore_errors=True)

    plain = (before + after) / 2
    stamps = record["timestamps"]
    figures = {
        "preset": args.preset, "batch_size": args.batch_size, "steps": args.steps, "threads": args.threads,
        "zero_stage": args.zero_stage,
        "pytorch_tokens_per_s": [before, after],
        "ray_t2t_tokens_per_s": record["tokens_per_s"],
        "ratio": record["tokens_per_s"] / plain,
        "startup_s": stamps["first_step"] - submitted,
        "teardown_s": stamps["record_written"] - stamps["last_step"],
        "driver_return_s": returned - stamps["record_written"],
        "train_s": record["times"]["train_s"],
        "tokens_per_step": record["data"]["tokens_seen"] / record["steps"]["done"],
    }
    if scaled is not None:
        figures |= {"two_workers_tokens_per_s": scaled["tokens_per_s"],
                    "scaling_efficiency": scaled["tokens_per_s"] / (2 * record["tokens_per_s"])}
    return figures


def main() -> None:
    args = parser().parse_args()
    figures = measure(args)
    before, after = figures["pytorch_tokens_per_s"]
    print(f"model {args.preset}, batch {args.batch_size}, {args.steps} steps, {args.threads} thread(s), ZeRO {args.zero_stage}")
    print(f"  plain PyTorch loop   {before:10,.0f} tokens/s (before)  {after:10,.0f} tokens/s (after)")
    print(f"  ray_t2t loop         {figures['ray_t2t_tokens_per_s']:10,.0f} tokens/s")
    print(f"  ratio                {figures['ratio']:10.3f}   (goal >= 0.95)")
    print(f"  start-up             {figures['startup_s']:10.1f} s   submit -> first step (Ray, workers, model, engine, first eval)")
    print(f"  tear-down            {figures['teardown_s']:10.1f} s   last step -> record written (checkpoint, test, export)")
    print(f"  driver return        {figures['driver_return_s']:10.1f} s   record written -> train() returns")
    print(f"  training             {figures['train_s']:10.1f} s   the steps themselves")
    if "scaling_efficiency" in figures:
        print(f"  ray_t2t, 2 workers   {figures['two_workers_tokens_per_s']:10,.0f} tokens/s   "
              f"efficiency {figures['scaling_efficiency']:.3f} = tokens/s(2) / (2 x tokens/s(1))")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
