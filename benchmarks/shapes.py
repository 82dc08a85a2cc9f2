"""Training speed at realistic shapes: the ray_t2t loop against a plain PyTorch loop, side by side, and
decoder-only batches packed against padded.

    python benchmarks/shapes.py --device cuda     # one GPU: t5-60m, t5-220m, gpt2-124m, llama-135m, bf16
    python benchmarks/shapes.py --tiny            # CPU: the same comparisons on tiny models (make bench)
    python benchmarks/shapes.py --device cuda --compile   # adds the plain loop under torch.compile

The data is instruction-shaped and synthetic: sources of 1/8 to all of --source-tokens tokens and
targets of 1/8 to all of --target-tokens (default 512 and 128, uniform), words drawn from --vocab
distinct ones, one token a word; the loss is on the target only. Batches are not length-grouped
(training.group_by_length: false), as a packed run's would be: the spread of lengths in a batch is
what packing removes. Per preset, `--rounds` rounds alternate, each side's figure its best round:

  loop    the ray_t2t loop (DeepSpeed ZeRO --zero-stage, bf16 on a GPU), in this process, no Ray;
  plain   a hand-written loop on the same model, batches, fused AdamW, schedule and clipping
          (benchmarks/train_overhead.py's; bf16 autocast on a GPU): ratio loop / plain, goal >= 0.95;
  packed  decoder-only presets: the ray_t2t loop with training.packing (the same examples a step):
          tokens/s packed / padded, goal > 1 (shown, judged by make bench on its tiny run);
  compile with --compile: the plain loop under torch.compile (its compilation counted), against plain.

Tokens are real tokens (padding not counted). MFU is the loop's model FLOPs per second (6 x parameters
a token) over the device's dense bf16 peak (ray_t2t.ledger.PEAK_FLOPS), and with attention's score
and value products added; goal >= 40% for t5-220m and gpt2-124m on one H100 or H200. The padding
shares are arithmetic over the batches: padded with and without length grouping, and packed.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.suite import print_figures  # noqa: E402
from ray_t2t.config.experiment import validate_config  # noqa: E402
from ray_t2t.data import Split, prepare_data  # noqa: E402

MFU_GOAL = 0.40
MFU_PRESETS = ("t5-220m", "gpt2-124m")  # the goal's models
RATIO_GOAL = 0.95
GPU = {"presets": "t5-60m,t5-220m,gpt2-124m,llama-135m", "batch_size": 32, "steps": 30}
TINY = {"presets": "t5-0.5m,gpt2-0.5m,llama-tiny", "batch_size": 8, "steps": 12, "source_tokens": 128}
TINY |= {"target_tokens": 32, "vocab": 2000, "rounds": 2}


def write_examples(path: Path, count: int, source_tokens: int, target_tokens: int, vocab: int, seed: int) -> None:
    """JSON lines {source, target} of random words w0..w<vocab>, lengths uniform over [max/8, max]
    (the end-of-sequence takes one of the source's and target's tokens)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]

    def text(longest: int) -> str:
        return " ".join(rng.choices(words, k=rng.randint(max(1, longest // 8), longest - 1)))

    with path.open("w") as out:
        for _ in range(count):
            out.write(json.dumps({"source": text(source_tokens), "target": text(target_tokens)}) + "\n")


def experiment(folder: Path, data_file: Path, args, preset: str, packing: bool = False) -> dict:
    return {
        "run": {"name": "shapes", "storage_path": str(folder), "checkpoint_every_n_steps": args.steps},
        "data": {
            "task": "files",
            "files": {"train": str(data_file)},
            "split_sizes": {"train": args.steps * args.batch_size * 2, "validation": 8, "test": 8},
            "max_source_length": args.source_tokens,
            "max_target_length": args.target_tokens,
            "tokenizer": {"source_level": "word", "target_level": "word"},
        },
        "models": {"student": {"preset": preset}},
        "methods": [{"name": "scratch"}],
        "training": {
            "batch_size": args.batch_size,
            "max_steps": args.steps,
            "learning_rate": 1e-4,
            "warmup_steps": min(5, args.steps),
            "group_by_length": False,
            "packing": packing,
        },
        "eval": {"every_n_steps": args.steps, "batch_size": 8, "metric": "exact_match", "max_new_tokens": 4},
        "scaling": {"use_gpu": args.device == "cuda", "num_workers": 1},
        "deepspeed": {"zero_stage": args.zero_stage},
        "cost": {"device_hour": {"H200": 4.0, "H100": 3.0, "A100": 2.0, "gpu": 2.0}},
    }


def padding_shares(prepared, batch_size: int, encoder_decoder: bool) -> dict:
    """Pad share of the batch tensors: padded without and with length grouping, and packed."""
    from benchmarks.suite import padding_share
    from ray_t2t.batching.order import BatchOrder, length_keys
    from ray_t2t.batching.packing import pack_rows

    train = Split(prepared, "train")
    sources, targets = train.source_ids.lengths(), train.target_ids.lengths()
    keys = length_keys(sources, targets, encoder_decoder)
    shares = {}
    for grouped in (False, True):
        order = BatchOrder(keys, batch_size, group_by_length=grouped)
        batches = [order.indices(step) for step in range(order.batches_per_epoch)]
        name = "grouped" if grouped else "padded"
        shares[name] = padding_share(batches, sources, targets, encoder_decoder)["pad_share"]
        if not grouped and not encoder_decoder:
            real = positions = 0
            for batch in batches:
                lengths = [sources[i] + targets[i] for i in batch]
                rows = pack_rows(lengths, max(lengths))
                real += sum(lengths)
                positions += len(rows) * max(sum(lengths[i] for i in row) for row in rows)
            shares["packed"] = 1 - real / positions
    return shares


def plain_run(cfg, prepared, device: str, compile: bool = False) -> dict:
    import torch

    from benchmarks.train_overhead import plain_loop

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tokens, seconds = plain_loop(cfg, prepared, threads=1, device=device, compile=compile)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    return {"tokens_per_s": tokens / seconds, "peak_memory_gib": peak}


def loop_run(cfg, prepared, folder: Path, name: str, lengths: tuple[list, list]) -> dict:
    from benchmarks.gpu_mfu import figures_of
    from benchmarks.suite import run_in_process

    run_dir = folder / name
    record = run_in_process(cfg, "scratch", prepared.path, run_dir)
    figures = figures_of(record, *lengths)
    shutil.rmtree(run_dir, ignore_errors=True)
    return figures


def measure_preset(args, preset: str, folder: Path, data_file: Path) -> dict:
    from ray_t2t.models import model_config

    cfg = validate_config(experiment(folder, data_file, args, preset))
    prepared = prepare_data(cfg)
    train = Split(prepared, "train")
    lengths = (train.source_ids.lengths(), train.target_ids.lengths())
    decoder_only = not model_config(cfg.models.student).is_encoder_decoder
    packed_cfg = validate_config(experiment(folder, data_file, args, preset, packing=True)) if decoder_only else None
    rounds: dict[str, list[dict]] = {"loop": [], "plain": [], "packed": [], "compile": []}
    for round_ in range(args.rounds):
        print(f"{preset}: round {round_ + 1}/{args.rounds} ...", flush=True)
        rounds["loop"].append(loop_run(cfg, prepared, folder, f"{preset}-loop-{round_}", lengths))
        rounds["plain"].append(plain_run(cfg, prepared, args.device))
        if packed_cfg is not None:
            rounds["packed"].append(loop_run(packed_cfg, prepared, folder, f"{preset}-packed-{round_}", lengths))
        if args.compile:
            rounds["compile"].append(plain_run(cfg, prepared, args.device, compile=True))
    best = {name: max(runs, key=lambda r: r["tokens_per_s"]) for name, runs in rounds.items() if runs}
    row = {
        "preset": preset,
        "family": "decoder_only" if decoder_only else "encoder_decoder",
        "mean_source_tokens": sum(lengths[0]) / len(lengths[0]),
        "mean_target_tokens": sum(lengths[1]) / len(lengths[1]),
        "padding": padding_shares(prepared, args.batch_size, not decoder_only),
        "runs": best,
        "rounds_tokens_per_s": {name: [r["tokens_per_s"] for r in runs] for name, runs in rounds.items() if runs},
        "plain_ratio": best["loop"]["tokens_per_s"] / best["plain"]["tokens_per_s"],
    }
    if "packed" in best:
        row["packed_speedup"] = best["packed"]["tokens_per_s"] / best["loop"]["tokens_per_s"]
    if "compile" in best:
        row["compile_speedup"] = best["compile"]["tokens_per_s"] / best["plain"]["tokens_per_s"]
    return row


def measure(args) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="ray_t2t_shapes_"))
    started = time.perf_counter()
    try:
        data_file = folder / "examples.jsonl"
        count = args.steps * args.batch_size * 2 + 16
        write_examples(data_file, count, args.source_tokens, args.target_tokens, args.vocab, seed=0)
        rows = [measure_preset(args, preset, folder, data_file) for preset in args.presets.split(",")]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "device": args.device,
        "tiny": args.tiny,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "rounds": args.rounds,
        "source_tokens": args.source_tokens,
        "target_tokens": args.target_tokens,
        "zero_stage": args.zero_stage,
        "wall_s": time.perf_counter() - started,
        "presets": rows,
    }


def report(figures: dict) -> str:
    def pct(value):
        return f"{value:.1%}" if value is not None else "n/a"

    def gib(value):
        return f"{value:.2f}" if value is not None else "n/a"

    lines = [
        f"{figures['device']}, batch {figures['batch_size']}, {figures['steps']} steps, best of {figures['rounds']} "
        f"rounds, ZeRO {figures['zero_stage']}, sources <= {figures['source_tokens']} and targets <= "
        f"{figures['target_tokens']} tokens, not length-grouped",
        f"{'preset':<12}{'tokens/s':>10}{'plain':>10}{'ratio':>7}{'MFU':>7}{'+attn':>7}{'peak GiB':>9}"
        f"{'plain GiB':>10}{'pad':>6}{'packed':>10}{'x':>6}{'pad':>6}",
    ]
    for row in figures["presets"]:
        loop, plain = row["runs"]["loop"], row["runs"]["plain"]
        packed = row["runs"].get("packed")
        packed_cells = (
            f"{packed['tokens_per_s']:>10,.0f}{row['packed_speedup']:>6.2f}{pct(row['padding']['packed']):>6}"
            if packed
            else f"{'-':>10}{'-':>6}{'-':>6}"
        )
        lines.append(
            f"{row['preset']:<12}{loop['tokens_per_s']:>10,.0f}{plain['tokens_per_s']:>10,.0f}"
            f"{row['plain_ratio']:>7.3f}{pct(loop['mfu']):>7}{pct(loop['mfu_with_attention']):>7}"
            f"{gib(loop['peak_memory_gib']):>9}{gib(plain['peak_memory_gib']):>10}"
            f"{pct(row['padding']['padded']):>6}{packed_cells}"
        )
    lines.append(
        "tokens/s: real tokens; ratio: loop / plain (goal >= 0.95); pad: padding share padded, then packed; "
        "x: packed / padded tokens/s"
    )
    for row in figures["presets"]:
        if "compile_speedup" in row:
            lines.append(f"{row['preset']}: plain loop compiled / eager tokens/s {row['compile_speedup']:.3f}")
        if row["preset"] in MFU_PRESETS and row["runs"]["loop"]["mfu"] is not None:
            mfu = row["runs"]["loop"]["mfu"]
            lines.append(
                f"{row['preset']}: MFU {mfu:.1%}, goal >= {MFU_GOAL:.0%}: {'pass' if mfu >= MFU_GOAL else 'FAIL'}"
            )
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny models and shapes for a CPU (make bench, tests)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--presets", help=f"comma-separated model presets (default {GPU['presets']})")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--rounds", type=int, help="alternated rounds, best of each side (default 2)")
    parser.add_argument("--source-tokens", type=int, help="longest source, end-of-sequence included (512)")
    parser.add_argument("--target-tokens", type=int, help="longest target (128)")
    parser.add_argument("--vocab", type=int, help="distinct words (32000)")
    parser.add_argument("--zero-stage", type=int, default=0, choices=[0, 1, 2, 3], help="DeepSpeed ZeRO stage (0)")
    parser.add_argument("--compile", action="store_true", help="also the plain loop under torch.compile")
    parser.add_argument("--json", help="write the figures to this file")
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    defaults = (GPU | TINY) if args.tiny else GPU | {"source_tokens": 512, "target_tokens": 128, "vocab": 32000}
    defaults.setdefault("rounds", 2)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main() -> None:
    args = parse()
    print_figures(measure(args), report, args.json)


if __name__ == "__main__":
    main()
