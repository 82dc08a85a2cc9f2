"""The training loop every method runs: one copy per worker, on a DeepSpeed engine.

It reads top to bottom. The spine, run_worker: start_run (the method's model -> a DeepSpeed engine with
the config's ZeRO stage, precision, offload, accumulation and clipping -> resume from the latest
checkpoint) -> train_steps (micro-batches from a BatchOrder, so the data position is the step count;
every `eval.every_n_steps` the task metric on validation; every `run.checkpoint_every_n_steps` a
DeepSpeed checkpoint reported to Ray) -> finish (test metrics, the exported model, the run record).
The engine's settings, the process's placement and small helpers follow. Inference speed is measured
later, one exported model at a time (ray_t2t.inference).

Clocks, tokens, FLOPs, energy and the learning curve are kept by ray_t2t.training.accounting: `train_s`
counts optimizer steps only; evaluation, checkpoints and export have clocks of their own, so how often
a run is measured does not change its cost. They are saved in every checkpoint, so a resumed run
continues its curve and its totals where the checkpoint left them.

The loop never imports Ray: it talks to a TrainContext (ray_t2t.training.context).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray_t2t import console
from ray_t2t.batching.order import BatchOrder, SubsetOrder, length_keys
from ray_t2t.batching.packing import pack_batch, quiet_packed_batch_warning, to_device
from ray_t2t.config.experiment import ExperimentConfig, method_entry, validate_config
from ray_t2t.data import PreparedData, Split
from ray_t2t.decoding import generate
from ray_t2t.errors import ConfigError, UserError, shorten
from ray_t2t.inference import export_key
from ray_t2t.ledger import (
    EnergyMeter,
    Hardware,
    crossing,
    hardware_of,
    write_record,
)
from ray_t2t.methods import Setup, collate, get_method, model_spec
from ray_t2t.metrics import compute_metrics
from ray_t2t.model_card import model_card
from ray_t2t.models import (
    check_positions,
    count_parameters,
    exported_parameters,
    is_encoder_decoder,
    training_flops_per_token,
)
from ray_t2t.placement import gpu_placement, own_cores
from ray_t2t.run_record import new_record
from ray_t2t.storage import StoragePath, files_under, location, staged_folder, write_atomic
from ray_t2t.tracking import Tracker
from ray_t2t.training.accounting import (
    bank_energy,
    batch_tokens,
    curve_point,
    new_state,
    peak_memory_bytes,
    record_fields,
)
from ray_t2t.training.context import (
    InProcessContext,
    RayTrainContext,
    single_process_group,
)

if TYPE_CHECKING:
    from ray_t2t.methods.base import Method

CHECKPOINT_TAG = "ray_t2t"
# Test hook, read by the launcher from the driver's environment: "STEP:MARKER_FILE" makes rank 0 raise
# once at STEP (creating MARKER_FILE), to prove that a failed worker group resumes from its checkpoint.
FAIL_ONCE_ENV = "RAY_T2T_FAIL_ONCE_AT_STEP"


def train_loop_per_worker(payload: dict) -> None:
    """Ray Train's entry point (TorchTrainer's train_loop_per_worker)."""
    entered = time.time()

    local = payload.get("local_mode")
    # When Ray started this worker's process and handed it the run: with the first step's time, the
    # run record's timestamps split a run's start-up into Ray's part and ray_t2t's. In local mode the
    # process is the caller's (a sweep trial's, perhaps reused from an earlier trial): not this run's.
    stamps = {"process_start": None if local else _process_started(), "function_start": entered}
    with run_placement(payload) as placement:
        payload = dict(payload, start_timestamps=stamps, placement=placement)
        if not local:
            run_worker(payload, RayTrainContext())
            return
        with single_process_group():
            run_worker(payload, InProcessContext(local["checkpoints"], local["keep"], local["to_tune"]))


def run_worker(payload: dict, ctx: Any) -> None:
    """Train one method on this worker. `payload`: config (dict), label, data_path, run_dir,
    config_hash, run_hash, threads (CPU threads per worker), fail_once_at_step (tests), start_timestamps
    (when Ray started the process and the function; timestamps of the record)."""
    run = start_run(payload, ctx)
    train_steps(run)
    finish(run)


@dataclass
class Run:
    """One worker's training run: what start_run() builds and every phase after it uses."""

    payload: dict
    ctx: Any  # TrainContext
    cfg: ExperimentConfig
    setup: Setup
    method: Any  # the method's module
    data: PreparedData
    engine: Any  # deepspeed.DeepSpeedEngine
    scheduler: Any
    device: Any  # torch.device
    hardware: Hardware
    price: float  # per device-hour
    total_params: int
    trainable_params: int
    flops_per_token: tuple[float, float]  # training FLOPs per (source, target) token
    energy: EnergyMeter
    state: dict  # step, clocks, tokens, curve, target: all saved in checkpoints
    run_dir: StoragePath
    tracker: Tracker = field(default_factory=lambda: Tracker([]))  # rank 0's (ray_t2t.tracking)


def count_nodes(ctx: Any) -> int:
    """How many machines the run's workers are on (every rank calls this: a collective)."""
    import torch.distributed as dist

    if ctx.world_size == 1:
        return 1
    ids: list = [None] * ctx.world_size
    dist.all_gather_object(ids, getattr(ctx, "node_id", None))
    return len(set(ids))


def start_run(payload: dict, ctx: Any) -> Run:
    """Build the method's model and its DeepSpeed engine; resume from the latest checkpoint."""
    wall_start = time.perf_counter()
    cfg = validate_config(payload["config"])
    use_gpu = cfg.scaling.use_gpu
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if use_gpu else "cpu")
    import deepspeed
    import torch

    entry = method_entry(cfg, payload["label"])
    method = get_method(entry.name)
    if use_gpu:
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, int(payload.get("threads", 1))))
    torch.manual_seed(cfg.seed * 1000 + ctx.rank)  # dropout; model init has its own seeded generator
    extras = payload.get("method_extras") or {}
    data = PreparedData.open(extras.get("data_path") or payload["data_path"])  # a method's own data (multitask)
    setup = Setup(cfg, entry, data.tokenizer(), seed=cfg.seed, extras=extras)
    model = method.build(setup)
    if cfg.training.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    setup.encoder_decoder = is_encoder_decoder(model)
    splits = data.summary["splits"].values()
    decoded = cfg.eval.max_new_tokens or cfg.data.max_target_length
    check_positions(
        model.config,
        max(split["max_source_tokens"] for split in splits),
        max([split["max_target_tokens"] for split in splits] + [decoded]),
        f"models.{getattr(entry, 'model', None) or 'student'}",
    )
    total_params, trainable_params = count_parameters(model)
    flops_per_token = training_flops_per_token(model)
    model.train()
    # fused: one kernel over all parameters; the optimizer step takes 0.40x the time of torch's
    # default per-tensor AdamW on the CPU (benchmarks/loop_options.py). DeepSpeed steps it on its own
    # flat fp32 partitions under ZeRO and bf16 alike.
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=cfg.training.learning_rate,
        weight_decay=cfg.training.weight_decay,
        fused=True,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
    skip_shared_memory_comm_build()
    deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=deepspeed_config(cfg, ctx.world_size, method)
    )
    extra = method.extra_flops_per_token(setup, engine)  # work beside the trained model's, e.g. a live teacher's
    flops_per_token = (flops_per_token[0] + extra[0], flops_per_token[1] + extra[1])
    if ctx.world_size == 1 and cfg.deepspeed.zero_stage == 0:
        # Averaging gradients over one rank changes nothing but still costs a gloo all-reduce per
        # micro-step (~4% of a tiny model's step time; benchmarks/train_overhead.py).
        engine.enable_backward_allreduce = False
    hardware = hardware_of(cfg, torch.cuda.get_device_name(device) if use_gpu else None, count_nodes(ctx))
    energy = EnergyMeter(device)

    state = new_state(energy.available)
    with ctx.latest_checkpoint() as folder:
        if folder is not None:
            _, client = engine.load_checkpoint(folder, tag=CHECKPOINT_TAG)
            state = client["ray_t2t"]
            torch.set_rng_state(client["rng"])
            state["resumes"] += 1
            _log(ctx, f"resumed from checkpoint at step {state['step']} (resume {state['resumes']})")
    state["setup_s"] += time.perf_counter() - wall_start
    _log(
        ctx,
        f"{entry.label or entry.name}: {entry.name} on {hardware.workers} x {hardware.device_type}, "
        f"{total_params / 1e6:.2f}M parameters ({trainable_params / 1e6:.2f}M trainable), "
        f"ZeRO {cfg.deepspeed.zero_stage}, {cfg.training.max_steps if method_trains(method, setup) else 0} steps, "
        f"setup {time.perf_counter() - wall_start:.1f}s",
    )
    run_dir = location(payload["run_dir"])
    run = Run(
        payload,
        ctx,
        cfg,
        setup,
        method,
        data,
        engine,
        scheduler,
        device,
        hardware,
        hardware.price_per_device_hour(cfg),
        total_params,
        trainable_params,
        flops_per_token,
        energy,
        state,
        run_dir,
    )
    if ctx.rank == 0 and payload.get("track", True):  # a sweep trial is logged by Tune's callbacks instead
        params = {"method": entry.model_dump(mode="json")} | cfg.model_dump(mode="json", exclude={"methods", "tune"})
        run.tracker = Tracker.start(cfg.tracking, cfg.run.name, run_dir.name, run_dir, params)
    return run


def train_steps(run: Run) -> None:
    """Optimizer steps until max_steps (or the target, with stop_at_target): validation, progress
    lines and checkpoints on their schedules."""
    import torch

    cfg, ctx, engine, state = run.cfg, run.ctx, run.engine, run.state
    train, validation = Split(run.data, "train"), Split(run.data, "validation")
    trains = method_trains(run.method, run.setup)
    rows = run.method.train_rows(run.setup, len(train))
    order_args = (
        length_keys(train.source_ids.lengths(), train.target_ids.lengths(), run.setup.encoder_decoder),
        cfg.training.batch_size,
        ctx.world_size,
        ctx.rank,
        cfg.seed,
        cfg.training.group_by_length,
    )
    make_order = run.method.batch_order  # e.g. multitask: draws by its task mixture
    if rows is not None:  # the method learns from these rows of the split only (fewshot's k examples)
        order = SubsetOrder(rows, cfg.training.batch_size, ctx.world_size, ctx.rank, cfg.seed) if trains else None
    elif make_order:
        order = make_order(run.setup, run.data, *order_args)
    else:
        order = BatchOrder(*order_args)
    collate_fn, loss_fn = run.method.collate, run.method.loss
    packing = cfg.training.packing and not run.setup.encoder_decoder  # check_config refused the rest
    if packing:
        quiet_packed_batch_warning()
    accumulation = cfg.deepspeed.gradient_accumulation_steps
    max_steps = cfg.training.max_steps if trains else 0
    if state["step"] == 0 and not state["curve"]:
        validate_into_curve(run, validation, {})  # the starting point of the learning curve
    loss_sum = torch.zeros((), device=run.device)  # summed on the device: no host sync per step
    loss_count = 0
    stats: dict[str, list] = {}  # a method's own statistics (loss() returning (loss, {name: scalar})): [sum, count]
    log_every = max(1, max_steps // 20)
    source_flops, target_flops = run.flops_per_token
    state.setdefault("flops", 0.0)
    # on the terminal of a run that trains in the ray-t2t process (local mode); a no-op elsewhere
    bar = console.progress(max_steps, run.payload["label"], initial=state["step"])
    while state["step"] < max_steps and not state["stopped_at_target"]:
        _maybe_fail(run)
        run.energy.resume()
        step_start = time.perf_counter()
        if state["step"] == 0:
            state["first_step_unix"] = time.time()
        for micro in range(accumulation):
            indices = order.indices(state["step"] * accumulation + micro)
            sources = [train.source_ids[i] for i in indices]
            targets = [train.target_ids[i] for i in indices]
            batch = collate_fn(run.setup, sources, targets, indices=indices)
            source_tokens, target_tokens = batch_tokens(batch, run.setup.encoder_decoder)
            if packing:
                batch = pack_batch(batch, run.setup.tokenizer.pad_id, run.method.position_keys)
            batch = {key: to_device(value, run.device) for key, value in batch.items()}
            loss = loss_fn(engine, batch, run.setup)
            if isinstance(loss, tuple):
                loss, step_stats = loss
                for key, value in step_stats.items():  # tensors stay on the device: no host sync per step
                    total = stats.setdefault(key, [0.0, 0])
                    total[0] = total[0] + (value.detach() if torch.is_tensor(value) else float(value))
                    total[1] += 1
            engine.backward(loss)
            engine.step()
            loss_sum += loss.detach()
            loss_count += 1
            # Ranks' batches differ in length by little (length-grouped); rank 0's count stands for all.
            state["tokens"] += (source_tokens + target_tokens) * ctx.world_size
            state["flops"] += (source_flops * source_tokens + target_flops * target_tokens) * ctx.world_size
        state["step"] += 1
        step = state["step"]
        last = step == max_steps
        if run.device.type == "cuda" and (
            last
            or step % log_every == 0
            or step % cfg.eval.every_n_steps == 0
            or step % cfg.run.checkpoint_every_n_steps == 0
        ):
            torch.cuda.synchronize(run.device)  # GPU work is queued: charge what is pending to training
        state["train_s"] += time.perf_counter() - step_start
        state["last_step_unix"] = time.time()
        bar.update(1)

        metrics: dict[str, Any] = {"step": step}
        if step % log_every == 0 or last or step % cfg.eval.every_n_steps == 0:
            metrics["train_loss"] = float(loss_sum) / max(1, loss_count)
            metrics |= {f"train_{key}": float(total) / count for key, (total, count) in stats.items()}
            stats.clear()
            loss_sum.zero_()
            loss_count = 0
        if step % cfg.eval.every_n_steps == 0 or last:
            validate_into_curve(run, validation, metrics)
        if "train_loss" in metrics:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k != "step")
            tokens_per_s = state["tokens"] / state["train_s"] if state["train_s"] else 0
            _log(
                ctx,
                f"step {step}/{max_steps}: {shown}, lr {run.scheduler.get_last_lr()[0]:.3g}, "
                f"{tokens_per_s:,.0f} tokens/s",
            )
        if step % cfg.run.checkpoint_every_n_steps == 0 or last or state["stopped_at_target"]:
            save_checkpoint(run, metrics)
        elif "val_loss" in metrics:
            ctx.report(metrics)  # every rank reports at the same steps: Ray's report is a barrier
    bar.close()
    if rows is not None:  # distinct rows trained on (or, without training, read: in-context demonstrations)
        state["train_examples"] = order.rows_fed(state["step"] * accumulation) if trains else len(rows)


def validate_into_curve(run: Run, validation: Split, metrics: dict) -> None:
    """Validate now; append a learning-curve point (and the metrics to report); note the target."""
    cfg, state = run.cfg, run.state
    bank_energy(run.energy, run.state, lambda value: _all_gather(run.ctx, value))
    eval_start = time.perf_counter()
    val = evaluate(run, validation)
    state["eval_s"] += time.perf_counter() - eval_start
    state["curve"].append(
        curve_point(state, method_trains(run.method, run.setup), run.hardware.devices, run.price, metrics, val)
    )
    run.tracker.log(state["curve"][-1], state["step"])
    metrics |= {f"val_{k}": v for k, v in val.items()}
    if state["time_to_target"] is None and _reached(val, cfg):
        target = cfg.eval.target
        state["time_to_target"] = crossing(state["curve"], f"val_{target.metric}", target.op, target.value)
        _log(
            run.ctx,
            f"target {target.metric} {target.op} {target.value:g} reached by step {state['step']} "
            f"(crossed at step {state['time_to_target']['step']:.0f} interpolated, "
            f"{state['time_to_target']['wall_s']:.1f}s of training)",
        )
        # a teacher trains for its quality, which every student inherits: never cut short at the target
        state["stopped_at_target"] = cfg.eval.stop_at_target and getattr(run.setup.params, "model", None) != "teacher"
    task_targets = run.setup.extras.get("task_targets")  # a multitask run: {task: target dict or None}
    if task_targets:
        by_task = state.setdefault("time_to_target_by_task", {task: None for task in task_targets})
        for task, target in task_targets.items():
            if target is not None and by_task.get(task) is None and _reached(val, cfg, target, f"_{task}"):
                by_task[task] = crossing(
                    state["curve"], f"val_{target['metric']}_{task}", target["op"], target["value"]
                )
                _log(
                    run.ctx,
                    f"task {task}: target {target['metric']} {target['op']} {target['value']:g} reached at "
                    f"step {state['step']}, {state['train_s']:.1f}s of training",
                )


def evaluate(run: Run, split: Split) -> dict[str, float]:
    """Teacher-forced task loss and token accuracy and, for task-evaluating methods, the eval metrics
    on decoded outputs. Each rank takes every world_size-th example; results are gathered, so every
    rank returns the same numbers (and takes the same stop-at-target decision)."""
    import torch

    cfg, setup, method, engine, ctx, device = run.cfg, run.setup, run.method, run.engine, run.ctx, run.device
    model = engine.module
    mine = list(range(ctx.rank, len(split), ctx.world_size))
    sources = _prompts(method, setup, [split.source_ids[i] for i in mine])
    targets = [split.target_ids[i] for i in mine]
    evaluates_task = method.evaluates_task
    model.eval()
    loss_sum, loss_tokens, correct, predictions = 0.0, 0, 0, []
    rows: list[tuple[float, int, int]] = []  # per example (loss sum, tokens, correct): a multitask split's breakdown
    with torch.no_grad(), full_parameters(engine):
        step = cfg.eval.batch_size
        generator = torch.Generator().manual_seed(cfg.seed)
        for start in range(0, len(mine), step):
            pair = (sources[start : start + step], targets[start : start + step])
            if evaluates_task:
                # The task's own cross-entropy for every method (not a method's training loss, which
                # may mix in distillation terms), so validation loss compares across methods.
                batch = collate(setup, *pair)
            else:  # e.g. pretraining: its own objective on held-out text
                batch = method.collate(setup, *pair, generator=generator)
            batch = {key: value.to(device) for key, value in batch.items()}
            outputs = model(**batch)
            labels, logits = batch["labels"], outputs.logits
            if not setup.encoder_decoder:  # a decoder-only model predicts token t+1 at position t
                labels, logits = labels[:, 1:], logits[:, :-1]
            scored = labels != -100
            tokens = int(scored.sum())
            loss_sum += float(outputs.loss) * tokens
            loss_tokens += tokens
            correct += int(((logits.argmax(-1) == labels) & scored).sum())
            if split.tasks is not None:
                token_loss = torch.nn.functional.cross_entropy(
                    logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="none"
                )
                hits = ((logits.argmax(-1) == labels) & scored).sum(-1)
                rows += zip(token_loss.sum(-1).tolist(), scored.sum(-1).tolist(), hits.tolist())
        if evaluates_task and sources:
            max_new = cfg.eval.max_new_tokens or cfg.data.max_target_length
            predictions = generate(
                model,
                setup.tokenizer,
                sources,
                max_new_tokens=max_new,
                num_beams=cfg.eval.num_beams,
                batch_size=cfg.eval.batch_size,
            )
    model.train()
    results = _all_gather(ctx, (mine, predictions, loss_sum, loss_tokens, correct, rows))
    total_tokens = max(1, sum(r[3] for r in results))
    metrics = {
        "loss": sum(r[2] for r in results) / total_tokens,
        "token_accuracy": sum(r[4] for r in results) / total_tokens,
    }
    names = list(dict.fromkeys([cfg.eval.metric, "per", "exact_match"]))  # ordered, unique
    by_index = {i: p for r in results for i, p in zip(r[0], r[1])}
    if evaluates_task:
        order = sorted(by_index)
        metrics |= compute_metrics([by_index[i] for i in order], [split.references[i] for i in order], names)
    if split.tasks is not None:  # the same figures per task, named <figure>_<task> (wer_g2p)
        row_of = {i: row for r in results for i, row in zip(r[0], r[5])}
        for task in dict.fromkeys(split.tasks):
            mine_task = [i for i in sorted(row_of) if split.tasks[i] == task]
            tokens = max(1, sum(row_of[i][1] for i in mine_task))
            metrics[f"loss_{task}"] = sum(row_of[i][0] for i in mine_task) / tokens
            metrics[f"token_accuracy_{task}"] = sum(row_of[i][2] for i in mine_task) / tokens
            if evaluates_task:
                scores = compute_metrics(
                    [by_index[i] for i in mine_task], [split.references[i] for i in mine_task], names
                )
                metrics |= {f"{name}_{task}": value for name, value in scores.items()}
    return metrics


def save_checkpoint(run: Run, metrics: dict) -> None:
    """A DeepSpeed checkpoint (every rank writes its shard) reported to Ray with the metrics."""
    import torch

    bank_energy(run.energy, run.state, lambda value: _all_gather(run.ctx, value))
    started = time.perf_counter()
    folder = tempfile.mkdtemp(prefix="ray_t2t_checkpoint_")
    run.engine.save_checkpoint(
        folder, tag=CHECKPOINT_TAG, client_state={"ray_t2t": run.state, "rng": torch.get_rng_state()}
    )
    run.ctx.report(metrics, checkpoint_dir=folder)
    shutil.rmtree(folder, ignore_errors=True)
    run.state["checkpoint_s"] += time.perf_counter() - started


def _teachers_of(setup: Setup) -> list[str]:
    """What a run learned from, for its model card: soft-target folders (named after their teacher)
    and a live teacher's path."""
    found = [location(str(folder)).name for folder in setup.extras.get("soft_targets") or []]
    return found + ([str(setup.extras["teacher"])] if setup.extras.get("teacher") else [])


def finish(run: Run) -> None:
    """Test metrics, export, and the run record (written by rank 0)."""
    cfg, setup, ctx, engine, state = run.cfg, run.setup, run.ctx, run.engine, run.state
    test = Split(run.data, "test")
    finish_start = time.perf_counter()
    test_metrics = evaluate(run, test)
    test_s = time.perf_counter() - finish_start
    peaks = _all_gather(ctx, peak_memory_bytes(run.device))
    export_dir = run.run_dir / "model"
    exported: dict[str, Any] = {}
    with full_parameters(engine):
        if ctx.rank == 0:
            with staged_folder(export_dir) as staging:  # renamed into place, or uploaded
                run.method.export(engine.module, staging, setup)
                setup.tokenizer.save(staging / "ray_t2t_tokenizer")
                setup.tokenizer.to_transformers(decoder_only=not setup.encoder_decoder).save_pretrained(staging)
                exported = {"params": exported_parameters(staging), "key": export_key(staging)}
    if ctx.rank != 0:
        return
    fields = record_fields(
        run,
        exported,
        test_metrics,
        test_s,
        time.perf_counter() - finish_start,
        max(peaks),
        precision=engine_precision(cfg, run.method),
        initialized_from=initialized_from(setup),
    )
    files = [name for name, _, _ in files_under(export_dir)]
    card = model_card(fields, teachers=_teachers_of(setup), kind=run.method.kind, files=files)
    write_atomic(export_dir / "README.md", card)  # before the record: a finished run's export has its card
    write_record(run.run_dir, new_record(**fields))
    run.tracker.finish(
        {
            "test": fields["final"]["test"],
            "train_s": state["train_s"],
            "device_hours": fields["device_seconds"] / 3600,
            "cost": fields["cost"]["total"],
            "time_to_target": fields.get("time_to_target") or {},
            "params_total": fields["model"]["total_params"],
        }
    )
    shown = cfg.eval.metric if cfg.eval.metric in test_metrics else "loss"  # pretrain scores its own objective
    _log(
        ctx,
        f"finished: test {shown} {test_metrics.get(shown, float('nan')):.4g}, "
        f"{state['train_s']:.1f}s training, record {run.run_dir / 'record.json'}",
    )


# ------------------------------------------------------------------------------ the engine


def engine_precision(cfg: ExperimentConfig, method: Method | None = None) -> str:
    """deepspeed.precision, with auto = bf16 on GPU and fp32 on CPU, unless the method fixes it."""
    if cfg.deepspeed.precision != "auto":
        return cfg.deepspeed.precision
    return (method and method.engine_precision) or ("bf16" if cfg.scaling.use_gpu else "fp32")


def deepspeed_config(cfg: ExperimentConfig, world_size: int, method: Method | None = None) -> dict[str, Any]:
    ds = cfg.deepspeed
    precision = engine_precision(cfg, method)
    zero: dict[str, Any] = {"stage": ds.zero_stage}
    if ds.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if ds.offload_params:
        zero["offload_param"] = {"device": "cpu"}
    config = {
        "train_micro_batch_size_per_gpu": cfg.training.batch_size,
        "gradient_accumulation_steps": ds.gradient_accumulation_steps,
        "train_batch_size": cfg.training.batch_size * ds.gradient_accumulation_steps * world_size,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        # torch's AdamW is given to the engine: no JIT-built optimizer ops, also under ZeRO offload.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
    }
    if ds.gradient_clipping > 0:
        config["gradient_clipping"] = ds.gradient_clipping
    return _merged(config, ds.config_overrides)


def _merged(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` laid over it, mappings merged key by key."""
    merged = dict(base)
    for key, value in overrides.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merged(merged[key], value) if both else value
    return merged


def check_deepspeed_config(cfg: ExperimentConfig, world_size: int, method: Method | None = None) -> None:
    """ConfigError naming deepspeed.config_overrides when DeepSpeed refuses the config a run would
    train with (an unknown or mistyped entry of a section), before any work."""
    if not cfg.deepspeed.config_overrides:
        return
    import logging

    from pydantic import ValidationError

    logging.disable(logging.WARNING)  # DeepSpeed announces the accelerator it found as it is imported
    try:
        from deepspeed.runtime.config import DeepSpeedConfig
    finally:
        logging.disable(logging.NOTSET)

    try:
        DeepSpeedConfig(deepspeed_config(cfg, world_size, method))
    except (ValidationError, ValueError, TypeError, AssertionError) as err:
        reason = " ".join(line.strip() for line in str(err).splitlines() if "errors.pydantic.dev" not in line)
        raise ConfigError(f"deepspeed.config_overrides: DeepSpeed refuses it: {shorten(reason, 600)}") from None


def enable_gradient_checkpointing(model: Any) -> None:
    """transformers' activation checkpointing on the model a method trains (or the task model a
    wrapper holds: gan, vae), non-reentrant so that frozen inputs (LoRA) still get gradients."""
    target = model if hasattr(model, "gradient_checkpointing_enable") else getattr(model, "task_model", None)
    if target is None or not getattr(target, "supports_gradient_checkpointing", True):
        raise UserError(f"training.gradient_checkpointing: {type(model).__name__} does not support it")
    # transformers turns the key/value cache off in training forwards itself; evaluation keeps it.
    # transformers 5 names it activation checkpointing (the old name warns)
    if hasattr(target, "activation_checkpointing_enable"):
        target.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def lr_factor(step: int, cfg: ExperimentConfig) -> float:
    """Multiplier of the peak learning rate for optimizer step `step` (0-based): linear warmup, then
    linear or cosine decay to zero at max_steps, or constant."""
    training = cfg.training
    if step < training.warmup_steps:
        return (step + 1) / training.warmup_steps
    if training.lr_schedule == "constant":
        return 1.0
    progress = (step - training.warmup_steps) / max(1, training.max_steps - training.warmup_steps)
    progress = min(1.0, progress)
    if training.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0 - progress


def skip_shared_memory_comm_build() -> None:
    """DeepSpeed's communication backend JIT-compiles a shared-memory all-reduce op (deepspeed_shm_comm)
    when it starts on a CPU, for its inference all-reduce alone, which ray_t2t never calls: ~25 s of C++
    build the first time in an environment, and a failed run ("Error building extension") where no C++
    compiler is installed. Marked incompatible (deepspeed.ops keeps that dict so that edits persist),
    it is skipped; training's all-reduces are torch.distributed's (gloo, NCCL) either way."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


# ---------------------------------------------------------------------------- the process


@contextmanager
def run_placement(payload: dict) -> Iterator[Any]:
    """A CPU worker trains on cores of its own (ray_t2t.placement: its `threads` cores, pinned);
    a GPU worker on the GPUs Ray gave it. Yields the placement for the run record."""

    if (payload.get("config") or {}).get("scaling", {}).get("use_gpu"):
        yield gpu_placement()
        return
    with own_cores(
        int(payload.get("threads", 1)), log=lambda message: print(f"[ray-t2t] {message}", flush=True)
    ) as placement:
        yield placement


def _process_started() -> float | None:
    try:
        import psutil  # comes with ray[default]
    except ImportError:
        return None
    return psutil.Process().create_time()


# -------------------------------------------------------------------------------- helpers


def method_trains(method: Method | None, setup: Setup) -> bool:
    """False for a method that takes no optimizer steps (fewshot in-context): it is charged its inference."""
    return method.trains(setup)


def _prompts(method: Method | None, setup: Setup, sources: list) -> list:
    """What the model reads for each source at evaluation (a method's prompt_sources, e.g. demonstrations)."""
    return method.prompt_sources(setup, sources)


def initialized_from(setup: Setup) -> str | None:
    """The trained weights a run starts from (the name or path of its role's model, e.g. a pretrain
    run's export for a fine-tune), or None for a random start. The report charges a run for the
    training of a model of the same experiment it starts from, as distillation for its teacher."""
    role = getattr(setup.params, "model", None) or "student"
    spec = model_spec(setup.cfg, role)
    return spec.name_or_path if spec.name_or_path and spec.pretrained else None


def _reached(metrics: dict, cfg: ExperimentConfig, target: dict | None = None, suffix: str = "") -> bool:
    """Whether `metrics` meet the target (eval.target, or a per-task target dict read at <metric><suffix>)."""
    target = target or (cfg.eval.target.model_dump() if cfg.eval.target else None)
    if target is None or target["metric"] + suffix not in metrics:
        return False
    value = metrics[target["metric"] + suffix]
    return value <= target["value"] if target["op"] == "<=" else value >= target["value"]


def _maybe_fail(run: Run) -> None:
    fail_at = run.payload.get("fail_once_at_step")
    if fail_at and run.ctx.rank == 0:
        fail_step, marker = fail_at.split(":", 1)
        if run.state["step"] == int(fail_step) and not Path(marker).exists():
            Path(marker).touch()
            raise RuntimeError(f"injected failure at step {fail_step} ({FAIL_ONCE_ENV})")


def _log(ctx: Any, message: str) -> None:
    if ctx.rank == 0:
        print(f"[ray-t2t] {message}", flush=True)


@contextmanager
def full_parameters(engine: Any) -> Iterator[Any]:
    """Under ZeRO-3 each rank holds a shard of every weight: gather them for decoding and export.
    A collective: every rank enters."""
    if engine.zero_optimization_stage() == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None):
            yield
    else:
        yield


def _all_gather(ctx: Any, value: Any) -> Any:
    import torch.distributed as dist

    if ctx.world_size == 1:
        return [value]
    gathered = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return gathered
