"""Throughput, MFU and energy of the ray_t2t training loop on one GPU (bf16), for a few model sizes.

    python benchmarks/gpu_mfu.py [--steps 300] [--runs t5-60m:256,t5-220m:256,gpt2-124m:256]

Each run is `scratch` on the embedded G2P task through the training loop without Ray (LocalContext,
one process per run, DeepSpeed ZeRO 0, bf16). Prints, per run, the training tokens/s, the model FLOPs
utilization against the device's dense bf16 peak (ledger.PEAK_FLOPS), joules per 1k tokens from
NVML's energy counter, and peak memory; then a plain PyTorch loop (AdamW, bf16 autocast, same model,
batches and clipping) on the same GPU for the ratio ray_t2t / plain. G2P sequences are short (~10 tokens a side), so the matrix
products are small: MFU here is a property of this task's shapes, not a ceiling of the loop.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import train_locally  # noqa: E402
from ray_t2t.config import validate_config  # noqa: E402
from ray_t2t.data import prepare_data  # noqa: E402


def experiment(folder: Path, preset: str, batch_size: int, steps: int) -> dict:
    return {
        "run": {"name": f"mfu-{preset}-{batch_size}", "storage_path": str(folder), "checkpoint_every_n_steps": steps},
        "data": {"split_sizes": {"train": 60000, "validation": 128, "test": 128}},
        "models": {"student": {"preset": preset}},
        "methods": [{"name": "scratch"}],
        "training": {"batch_size": batch_size, "max_steps": steps, "learning_rate": 1e-3, "warmup_steps": 20},
        "eval": {"every_n_steps": steps, "batch_size": 128, "metric": "per"},
        "scaling": {"use_gpu": True, "num_workers": 1},
        "cost": {"device_hour": {"H200": 4.0, "H100": 3.0, "A100": 2.0, "gpu": 2.0}},
    }


def plain_bf16(cfg, prepared, warmup: int = 10) -> float:
    """tokens/s of a minimal bf16-autocast PyTorch loop over the same batches (after `warmup` steps)."""
    import time

    import torch

    from ray_t2t.data import Split
    from ray_t2t.methods import Setup, collate
    from ray_t2t.models import build_model, is_encoder_decoder
    from ray_t2t.train.batch_order import BatchOrder

    setup = Setup(cfg, cfg.methods[0], prepared.tokenizer(), seed=cfg.seed)
    model, _ = build_model(cfg.models.student, setup.tokenizer, seed=cfg.seed)
    setup.encoder_decoder = is_encoder_decoder(model)
    model.cuda().train()
    train = Split(prepared, "train")
    order = BatchOrder([len(s) + len(t) for s, t in zip(train.source_ids, train.target_ids)],
                       cfg.training.batch_size, seed=cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.training.learning_rate)
    tokens = 0
    for step in range(cfg.training.max_steps + warmup):
        if step == warmup:
            torch.cuda.synchronize()
            tokens, started = 0, time.perf_counter()
        indices = order.indices(step)
        sources = [train.source_ids[i] for i in indices]
        targets = [train.target_ids[i] for i in indices]
        batch = {k: v.cuda(non_blocking=True) for k, v in collate(setup, sources, targets).items()}
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.deepspeed.gradient_clipping)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += sum(len(s) + len(t) for s, t in zip(sources, targets))
    torch.cuda.synchronize()
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--runs", default="t5-60m:256,t5-220m:256,gpt2-124m:256", help="PRESET:BATCH,...")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for item in args.runs.split(","):
            preset, batch = item.split(":")
            cfg = validate_config(experiment(Path(tmp), preset, int(batch), args.steps))
            data = prepare_data(cfg)
            print(f"{preset} batch {batch}: {args.steps} steps ...", flush=True)
            r = train_locally(cfg, "scratch", data.path, Path(tmp) / f"{preset}-{batch}")
            energy = r["energy_j"]
            rows.append((preset, batch, r["model"]["total_params"] / 1e6, r["tokens_per_s"], r["mfu"],
                         1000 * energy / r["data"]["tokens_seen"] if energy else None,
                         r["peak_memory_bytes"] / 2**30, r["learning_curve"][-1]["val_per"],
                         r["hardware"]["device_type"], plain_bf16(cfg, data)))
    print(f"\n{'preset':<11}{'batch':>6}{'params M':>9}{'tokens/s':>11}{'MFU':>8}{'J/1k tok':>9}"
          f"{'peak GiB':>9}{'val PER':>8}{'plain tok/s':>12}{'ratio':>7}  device")
    for preset, batch, params, tps, mfu, jpk, mem, per, device, plain in rows:
        mfu_s = f"{mfu:.2%}" if mfu is not None else "n/a"
        jpk_s = f"{jpk:.2f}" if jpk is not None else "n/a"
        print(f"{preset:<11}{batch:>6}{params:>9.1f}{tps:>11,.0f}{mfu_s:>8}{jpk_s:>9}{mem:>9.2f}{per:>8.3f}{plain:>12,.0f}{tps / plain:>7.2f}  {device}")


if __name__ == "__main__":
    main()
