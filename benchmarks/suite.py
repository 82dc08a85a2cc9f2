"""Shared pieces of the benchmark suite (benchmarks/run_all.py): the figures' goals and verdicts, the
padding-waste computation, the soft-target read benchmark, the baselines' batches, and one run of
the training loop without Ray (run_locally). Nothing here starts Ray.

    from benchmarks.suite import padding_share, padding_waste, verdict

Padding waste is pure arithmetic over BatchOrder and the examples' lengths: the share of the tokens
in the padded batch tensors that are padding, as ray_t2t's collate builds them (encoder-decoder:
sources padded to the batch's longest source, targets to its longest target; decoder-only: one
sequence of source + target per example, padded to the longest).
"""

from __future__ import annotations

import itertools
import json
import operator
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL_WORKER = """
import json, sys
from ray_t2t.training.context import LocalContext
from ray_t2t.training.loop import run_worker
payload = json.loads(sys.argv[1])
run_worker(payload, LocalContext(payload["run_dir"]))
"""


def padding_share(
    batches: Sequence[Sequence[int]],
    source_lengths: Sequence[int],
    target_lengths: Sequence[int],
    encoder_decoder: bool = True,
) -> dict:
    """Pad tokens / all tokens of the padded batches. `source_lengths` and `target_lengths` are the
    tokenized lengths (end-of-sequence included) by example index; `batches` are lists of indices.
    A decoder-only row is source + target long (the source's end-of-sequence becomes the separator)."""
    real = padded = 0
    for batch in batches:
        if not batch:
            continue
        if encoder_decoder:
            sources = [source_lengths[i] for i in batch]
            targets = [target_lengths[i] for i in batch]
            real += sum(sources) + sum(targets)
            padded += len(batch) * (max(sources) + max(targets))
        else:
            rows = [source_lengths[i] + target_lengths[i] for i in batch]
            real += sum(rows)
            padded += len(batch) * max(rows)
    return {"real_tokens": real, "padded_tokens": padded, "pad_share": (padded - real) / padded if padded else 0.0}


def padding_waste(
    source_lengths: Sequence[int],
    target_lengths: Sequence[int],
    batch_size: int,
    steps: int | None = None,
    world_size: int = 1,
    seed: int = 0,
    encoder_decoder: bool = True,
) -> dict:
    """Pad share of the micro-batches the training loop would see over `steps` steps (default: one
    epoch), with and without length-grouped batching (ray_t2t.batching.order.BatchOrder, with
    the keys the loop groups by: length_keys)."""
    from ray_t2t.batching.order import BatchOrder, length_keys

    lengths = length_keys(source_lengths, target_lengths, encoder_decoder)
    result = {}
    for grouped in (False, True):
        batches = []
        for rank in range(world_size):
            order = BatchOrder(lengths, batch_size, world_size, rank, seed, group_by_length=grouped)
            batches += [order.indices(step) for step in range(steps or order.batches_per_epoch)]
        result["grouped" if grouped else "ungrouped"] = padding_share(
            batches, source_lengths, target_lengths, encoder_decoder
        )
    return result


def step_batches(
    prepared,
    batch_size: int,
    encoder_decoder: bool,
    seed: int,
    world_size: int = 1,
    rank: int = 0,
    by_sum: bool = False,
    group_by_length: bool = True,
):
    """(sources, targets) token-id lists of each step's batch of the training split, step 0 on, in the
    order the ray_t2t loop trains on them (BatchOrder over length_keys; `by_sum`: grouped by source +
    target length instead, the grouping before length_keys). The plain baselines' batches."""
    from ray_t2t.batching.order import BatchOrder, length_keys
    from ray_t2t.data import Split

    train = Split(prepared, "train")
    sources, targets = list(map(len, train.source_ids)), list(map(len, train.target_ids))
    keys = [s + t for s, t in zip(sources, targets)] if by_sum else length_keys(sources, targets, encoder_decoder)
    order = BatchOrder(keys, batch_size, world_size, rank, seed, group_by_length)

    def batches():  # the split and the order are built above, before a caller starts its clock
        for step in itertools.count():
            indices = order.indices(step)
            yield [train.source_ids[i] for i in indices], [train.target_ids[i] for i in indices]

    return batches()


def worker_payload(cfg, label: str, data_path, run_dir: Path, threads: int = 1, extras: dict | None = None) -> dict:
    """What the training loop's run_worker takes for one run outside Ray."""
    return {
        "config": cfg.model_dump(mode="json"),
        "label": label,
        "data_path": str(data_path),
        "run_dir": str(run_dir),
        "config_hash": "-",
        "run_hash": "-",
        "threads": threads,
        "method_extras": extras or {},
    }


def run_locally(
    cfg, label: str, data_path, run_dir: Path, timeout: int = 900, threads: int = 1, extras: dict | None = None
) -> dict:
    """One run of the training loop in a fresh process without Ray (LocalContext, one device); its run
    record. `extras`: what the method's driver-side prepare() returned. RuntimeError with the end of the
    process's output when it fails."""
    payload = worker_payload(cfg, label, data_path, run_dir, threads, extras)
    try:
        done = subprocess.run(
            [sys.executable, "-c", LOCAL_WORKER, json.dumps(payload)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"run {label} took more than {timeout} s") from None
    if done.returncode != 0:
        raise RuntimeError(f"run {label} exited with {done.returncode}:\n{done.stdout[-1000:]}{done.stderr[-3000:]}")
    return json.loads((Path(run_dir) / "record.json").read_text())


def run_in_process(cfg, label: str, data_path, run_dir: Path, threads: int = 1) -> dict:
    """run_locally's run in this process (no start-up per run: for benchmarks of many short runs);
    its run record."""
    from ray_t2t.training.context import LocalContext
    from ray_t2t.training.loop import run_worker

    run_worker(worker_payload(cfg, label, data_path, run_dir, threads), LocalContext(str(run_dir)))
    return json.loads((Path(run_dir) / "record.json").read_text())


def spawn_ranks(target, args, world_size: int, what: str) -> None:
    """Run `target(rank, port, *args)` in `world_size` spawned processes (a gloo group's ranks on a free
    loopback port) and wait for them; RuntimeError naming `what` if one fails."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    processes = [context.Process(target=target, args=(rank, port, *args)) for rank in range(world_size)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    if any(process.exitcode for process in processes):
        raise RuntimeError(f"{what} failed (exit codes {[p.exitcode for p in processes]})")


def print_figures(figures: dict, report, json_path: str | None) -> None:
    """A benchmark's end: its report after a blank line, and its figures as JSON to `json_path`."""
    print()
    print(report(figures))
    if json_path:
        Path(json_path).write_text(json.dumps(figures, indent=1))


def grouping_speed(cfg, prepared, steps: int = 100, rounds: int = 2) -> dict:
    """Real (unpadded) tokens/s of a plain PyTorch loop (the config's student, batch size, AdamW, one
    thread) over length-grouped batches keyed by source + target length (the old grouping) and by
    length_keys (what the loop groups by now), alternated `rounds` times in this process; best of
    each. The model is rebuilt from the same seed for every run."""
    import torch

    from ray_t2t.methods import Setup, collate
    from ray_t2t.models import build_model, is_encoder_decoder

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    setup = Setup(cfg, cfg.methods[0], prepared.tokenizer(), seed=cfg.seed)
    best: dict[str, float] = {}
    try:
        for _ in range(rounds):
            for name in ("sum", "keys"):
                model, _ = build_model(cfg.models.student, setup.tokenizer, seed=cfg.seed)
                setup.encoder_decoder = is_encoder_decoder(model)
                batches = step_batches(
                    prepared, cfg.training.batch_size, setup.encoder_decoder, cfg.seed, by_sum=name == "sum"
                )
                model.train()
                optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.training.learning_rate)
                tokens, started = 0, time.perf_counter()
                for batch_sources, batch_targets in itertools.islice(batches, steps):
                    model(**collate(setup, batch_sources, batch_targets)).loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    tokens += sum(map(len, batch_sources)) + sum(map(len, batch_targets))
                best[name] = max(best.get(name, 0.0), tokens / (time.perf_counter() - started))
    finally:
        torch.set_num_threads(threads)
    return {
        "steps": steps,
        "rounds": rounds,
        "sum_tokens_per_s": best["sum"],
        "keys_tokens_per_s": best["keys"],
        "speedup": best["keys"] / best["sum"],
    }


def read_soft_targets(
    folder,
    source_ids,
    target_ids,
    batch_size: int,
    top_k: int,
    stored_temperature: float,
    temperature: float,
    seed: int = 0,
) -> dict:
    """How fast the stored soft targets become what kd_logits trains on: load_soft_targets (checksums,
    Parquet read, decode into per-example arrays: once per worker) then, for every batch of one epoch
    in BatchOrder, the teacher tensors kd_logits' collate builds (kd_logits.teacher_rows). Tokens are
    source + target tokens of the batches' examples, the unit the training loop counts."""
    from ray_t2t.batching.order import BatchOrder, length_keys
    from ray_t2t.methods.kd_logits import teacher_rows
    from ray_t2t.teachers import load_soft_targets

    started = time.perf_counter()
    rows = load_soft_targets(folder)
    load_s = time.perf_counter() - started
    order = BatchOrder(length_keys(list(map(len, source_ids)), list(map(len, target_ids)), True), batch_size, seed=seed)
    tokens = 0
    started = time.perf_counter()
    for step in range(order.batches_per_epoch):
        indices = order.indices(step)
        ids, logprobs = teacher_rows(rows, indices, top_k, stored_temperature, temperature)
        assert ids.shape == logprobs.shape and ids.shape[1] == top_k
        tokens += sum(len(source_ids[i]) + len(target_ids[i]) for i in indices)
    batches_s = time.perf_counter() - started
    return {
        "examples": len(rows),
        "epoch_tokens": tokens,
        "load_s": load_s,
        "batches_s": batches_s,
        "tokens_per_s": tokens / (load_s + batches_s),
        "batches_tokens_per_s": tokens / batches_s,
    }


# ------------------------------------------------------------------------------------ verdicts


COMPARE = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def verdict(value: float | None, op: str, goal: float) -> str:
    """'pass', 'FAIL', or 'n/a' when the figure was not measured."""
    if value is None:
        return "n/a"
    return "pass" if COMPARE[op](value, goal) else "FAIL"


def format_table(rows: list[dict]) -> str:
    """Rows of {figure, value, baseline, ratio, goal, result} as an aligned text table."""
    columns = ("figure", "value", "baseline", "ratio", "goal", "result")
    cells = [[str(row.get(c) if row.get(c) is not None else "—") for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)
