"""Would torch.compile speed up training? A plain PyTorch loop, eager against compiled, side by side.

    .venv/bin/python benchmarks/compile_check.py [--preset t5-0.5m] [--batch-size 128] [--warmup 60]
                                                 [--steps 100] [--threads 1] [--device cpu|cuda]

The same model (preset, seed, initial weights), the quickstart's batches (BatchOrder over the embedded
task with the loop's length keys) and AdamW, once eager and once through `torch.compile(model,
dynamic=True)`, under bf16 autocast on a GPU. Prints the time of the first `--warmup` steps
(compilation included) and tokens/s of the `--steps` after them, and their ratio. Not part of run_all.py (the compiled run alone takes ~2
minutes on 2 CPU cores); the README's performance section quotes it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run(mode: str, args, cfg, prepared) -> dict:
    import torch

    from benchmarks.suite import step_batches
    from ray_t2t.methods import Setup, collate
    from ray_t2t.models import build_model, is_encoder_decoder

    device = torch.device(args.device)
    setup = Setup(cfg, cfg.methods[0], prepared.tokenizer(), seed=cfg.seed)
    model, _ = build_model(cfg.models.student, setup.tokenizer, seed=cfg.seed)
    setup.encoder_decoder = is_encoder_decoder(model)
    model.to(device).train()
    forward = torch.compile(model, dynamic=True) if mode == "compiled" else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.training.learning_rate)
    batches = step_batches(prepared, args.batch_size, setup.encoder_decoder, cfg.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")  # mixed precision on a GPU
    started, tokens = time.perf_counter(), 0
    for step, (sources, targets) in zip(range(args.warmup + args.steps), batches):
        if step == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            warm_s, tokens, steady_start = time.perf_counter() - started, 0, time.perf_counter()
        batch = {k: v.to(device) for k, v in collate(setup, sources, targets).items()}
        with autocast:
            loss = forward(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += sum(map(len, sources)) + sum(map(len, targets))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"warmup_s": warm_s, "tokens_per_s": tokens / (time.perf_counter() - steady_start)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="t5-0.5m")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=60)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import torch

    from ray_t2t.config.experiment import load_config
    from ray_t2t.data import prepare_data

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="ray_t2t_bench_compile_") as folder:
        cfg = load_config(
            ROOT / "configs" / "quickstart.yaml", [f"run.storage_path={folder}", f"models.student.preset={args.preset}"]
        )
        prepared = prepare_data(cfg)
        eager = run("eager", args, cfg, prepared)
        compiled = run("compiled", args, cfg, prepared)
    print(f"{args.preset}, batch {args.batch_size}, {args.threads} thread(s), {args.device}")
    for name, result in (("eager", eager), ("compiled", compiled)):
        print(
            f"  {name:<9} first {args.warmup} steps {result['warmup_s']:6.1f} s, then {result['tokens_per_s']:9,.0f} tokens/s"
        )
    print(f"  ratio compiled / eager, tokens/s after warm-up: {compiled['tokens_per_s'] / eager['tokens_per_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
