"""Would a training-loop option speed up training? Each option against the default, side by side.

    .venv/bin/python benchmarks/loop_options.py [--preset t5-0.5m] [--batch-size 128] [--steps 80]
                                                [--rounds 2] [--threads 1] [--device cpu|cuda]
                                                [--variants default,fused_adamw,eager_attention]

A plain PyTorch loop (the quickstart's batches: BatchOrder over the embedded task with the loop's
length keys; AdamW; clipping) trains the same model (preset, seed, initial weights) once per variant,
the variants alternated `--rounds` times in this process; each variant's figure is its best round
(a shared machine only ever slows a run down). Prints tokens/s after 5 warm-up steps, the optimizer
step's milliseconds (zero_grad included), and each variant's ratio to `default`:

- default:          torch's AdamW as torch picks its kernels (per-tensor on CPU, foreach on CUDA) and
                    the attention transformers picks (SDPA for T5, BART, GPT-2, Llama).
- fused_adamw:      AdamW(fused=True): one fused kernel for all parameters (what the loop uses).
- foreach_adamw:    AdamW(foreach=True): multi-tensor kernels.
- eager_attention:  the model's attention by transformers' eager implementation instead of SDPA.

On CUDA the loop runs under bf16 autocast (fp32 weights), as a mixed-precision loop does.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = {
    "default": ({}, None),
    "fused_adamw": ({"fused": True}, None),
    "foreach_adamw": ({"foreach": True}, None),
    "eager_attention": ({}, "eager"),
}
WARMUP_STEPS = 5


def run(variant: str, args, cfg, prepared) -> dict:
    import contextlib

    import torch

    from benchmarks.suite import step_batches
    from ray_t2t.methods import Setup, collate
    from ray_t2t.models import build_model, is_encoder_decoder

    optimizer_options, attention = VARIANTS[variant]
    device = torch.device(args.device)
    setup = Setup(cfg, cfg.methods[0], prepared.tokenizer(), seed=cfg.seed)
    model, _ = build_model(cfg.models.student, setup.tokenizer, seed=cfg.seed)
    if attention:
        model.set_attn_implementation(attention)
    setup.encoder_decoder = is_encoder_decoder(model)
    model.to(device).train()
    batches = step_batches(prepared, cfg.training.batch_size, setup.encoder_decoder, cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.training.learning_rate, **optimizer_options)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    tokens, optimizer_s, started = 0, 0.0, None
    for step, (sources, targets) in zip(range(WARMUP_STEPS + args.steps), batches):
        if step == WARMUP_STEPS:
            sync()
            tokens, optimizer_s, started = 0, 0.0, time.perf_counter()
        batch = {key: value.to(device, non_blocking=True) for key, value in collate(setup, sources, targets).items()}
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.deepspeed.gradient_clipping)
        sync()
        optimizer_start = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        optimizer_s += time.perf_counter() - optimizer_start
        tokens += sum(map(len, sources)) + sum(map(len, targets))
    sync()
    seconds = time.perf_counter() - started
    return {
        "tokens_per_s": tokens / seconds,
        "optimizer_ms": 1000 * optimizer_s / args.steps,
        "step_ms": 1000 * seconds / args.steps,
        "final_loss": float(loss.detach()),
    }


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="t5-0.5m")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=80, help="timed steps per run, after 5 warm-up steps")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--variants", default="default,fused_adamw,foreach_adamw,eager_attention")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser


def main() -> None:
    import torch

    from ray_t2t.config.experiment import validate_config
    from ray_t2t.data import prepare_data

    args = parser().parse_args()
    variants = ["default"] + [v for v in args.variants.split(",") if v and v != "default"]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"loop_options.py: unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("loop_options.py: --device cuda, but torch sees no CUDA device")
    torch.set_num_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="ray_t2t_bench_options_"))
    cfg = validate_config(
        {
            "run": {"name": "options", "storage_path": str(folder)},
            "data": {"split_sizes": {"train": 20000, "validation": 64, "test": 64}},
            "models": {"student": {"preset": args.preset}},
            "methods": [{"name": "scratch"}],
            "training": {"batch_size": args.batch_size, "max_steps": args.steps, "learning_rate": 1e-3},
        }
    )
    prepared = prepare_data(cfg)
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for round_ in range(args.rounds):
        for variant in variants:
            result = run(variant, args, cfg, prepared)
            runs[variant].append(result)
            print(
                f"  round {round_ + 1} {variant:16} {result['tokens_per_s']:10,.0f} tokens/s   "
                f"optimizer {result['optimizer_ms']:6.2f} ms of a {result['step_ms']:6.1f} ms step",
                flush=True,
            )
    best = {
        v: {"tokens_per_s": max(r["tokens_per_s"] for r in rs), "optimizer_ms": min(r["optimizer_ms"] for r in rs)}
        for v, rs in runs.items()
    }
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {args.threads} thread(s)"
    print(f"model {args.preset}, batch {args.batch_size}, {args.steps} steps, {name}; best of {args.rounds} round(s)")
    for variant in variants:
        b, d = best[variant], best["default"]
        print(
            f"  {variant:16} {b['tokens_per_s']:10,.0f} tokens/s  ratio {b['tokens_per_s'] / d['tokens_per_s']:.3f}   "
            f"optimizer step {b['optimizer_ms']:6.2f} ms  ratio {b['optimizer_ms'] / d['optimizer_ms']:.3f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs, "best": best}, indent=1))


if __name__ == "__main__":
    main()
