"""A run's accounts: the clocks, tokens, FLOPs and energy the loop keeps (in its checkpointed state),
the learning curve's points, and the run record's fields. Definitions (ray_t2t.ledger): training time
counts optimizer steps only; device-seconds = seconds x devices; cost = device-hours x price. A method
that takes no optimizer steps (fewshot in-context) is charged its inference instead."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ray_t2t.ledger import EnergyMeter, cost_of, mfu
from ray_t2t.metrics import METRICS
from ray_t2t.storage import folder_bytes

if TYPE_CHECKING:
    import torch

    from ray_t2t.training.loop import Run


def new_state(energy_available: bool) -> dict[str, Any]:
    """The loop's state at step 0: every clock and total, saved in each checkpoint and restored on resume."""
    return {
        "step": 0,
        "tokens": 0,
        "train_s": 0.0,
        "eval_s": 0.0,
        "checkpoint_s": 0.0,
        "setup_s": 0.0,
        "curve": [],
        "time_to_target": None,
        "stopped_at_target": False,
        "resumes": 0,
        "flops": 0.0,
        "energy_j": 0.0 if energy_available else None,
    }


def bank_energy(energy: EnergyMeter, state: dict, gather: Callable[[Any], list]) -> None:
    """Stop the energy meter and add every worker's joules since the last bank to the run's total.
    A collective (every rank calls it at the same steps); `gather` collects one value per rank."""
    energy.pause()
    joules = gather(energy.take() if energy.available else None)
    if state.get("energy_j") is not None and all(j is not None for j in joules):
        state["energy_j"] += sum(joules)


def batch_tokens(batch: dict, encoder_decoder: bool) -> tuple[int, int]:
    """(source, target) tokens the model reads in a batch, from the batch as trained (a method may
    replace the targets, e.g. kd_sequence's teacher outputs); padding is not counted."""
    target = int((batch["labels"] != -100).sum())
    real = int(batch["attention_mask"].sum())
    return (real, target) if encoder_decoder else (real - target, target)


def peak_memory_bytes(device: torch.device) -> int:
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def curve_point(state: dict, trains: bool, devices: int, price: float, metrics: dict, val: dict) -> dict:
    """A learning-curve point at the current step: what was charged so far (training, or for a method
    that does not train, its evaluations), the training statistics since the last point and the
    validation metrics (val_*)."""
    charged_s = state["train_s"] if trains else state["eval_s"]
    device_s = charged_s * devices
    return {
        "step": state["step"],
        "wall_s": charged_s,
        "device_s": device_s,
        "cost": device_s / 3600 * price,
        "tokens": state["tokens"],
        "energy_j": state.get("energy_j"),
        "train_loss": metrics.get("train_loss"),
        **{k: v for k, v in metrics.items() if k.startswith("train_") and k != "train_loss"},  # method stats
        **{f"val_{k}": v for k, v in val.items()},
    }


def record_fields(
    run: Run,
    exported: dict,
    test_metrics: dict,
    test_s: float,
    finish_s: float,
    peak_memory: int,
    precision: str,
    initialized_from: str | None,
) -> dict[str, Any]:
    """The run record's fields (ray_t2t.run_record.RunRecord) of a finished run."""
    cfg, setup, state = run.cfg, run.setup, run.state
    export_dir = run.run_dir / "model"
    hardware, payload = run.hardware, run.payload
    # params describe what is deployed: the exported model (a merged LoRA, a GAN's generator alone);
    # what trained beside it (a discriminator, projections, a posterior, unmerged adapters) is listed apart
    total_params = exported.get("params") or run.total_params
    trainable_params = run.trainable_params
    train_s = state["train_s"]
    trains = run.method.trains(setup)
    # a method that does not train (fewshot in-context) is charged its inference: validation and test
    device_s = (train_s if trains else state["eval_s"] + test_s) * hardware.devices
    tokens_per_s = state["tokens"] / train_s if train_s else None
    flops = state.get("flops", 0.0)
    final_val = {k.removeprefix("val_"): v for k, v in state["curve"][-1].items() if k.startswith("val_")}
    fields = {
        "experiment": cfg.run.name,
        "label": payload["label"],
        "method": setup.params.name,
        "params": setup.params.model_dump(mode="json"),
        "seed": cfg.seed,
        "precision": precision,
        "config_hash": payload["config_hash"],
        "run_hash": payload["run_hash"],
        "setting_hash": payload.get("setting_hash"),
        "status": "finished",
        "stopped_at_target": state["stopped_at_target"],
        "resumes": state["resumes"],
        "steps": {"planned": cfg.training.max_steps if trains else 0, "done": state["step"]},
        "model": {
            "family": "encoder_decoder" if setup.encoder_decoder else "decoder_only",
            "architecture": run.engine.module.config.model_type,
            "total_params": total_params,
            "trainable_params": trainable_params if trains else 0,
            "training_only_params": max(0, run.total_params - total_params),
            "architecture_key": exported.get("key"),
            "size_on_disk_bytes": folder_bytes(export_dir),
            "export_path": str(export_dir),
            "initialized_from": initialized_from,
        },
        "data": {
            "task": run.data.summary.get("task", cfg.data.task),
            "train_examples": state.get("train_examples", run.data.summary["splits"]["train"]["examples"]),
            "tokens_seen": state["tokens"],
        },
        "hardware": hardware.as_dict() | {"placement": payload.get("placement")},
        "times": {
            "setup_s": state["setup_s"],
            "train_s": train_s,
            "eval_s": state["eval_s"],
            "checkpoint_s": state["checkpoint_s"],
            "finish_s": finish_s,
            "total_s": state["setup_s"] + train_s + state["eval_s"] + state["checkpoint_s"] + finish_s,
        },
        "device_seconds": device_s,
        "cost_basis": "training" if trains else "inference",
        "cost": {
            "currency": cfg.cost.currency,
            "price_per_device_hour": run.price,
            "total": cost_of(device_s, hardware, cfg),
        },
        "tokens_per_s": tokens_per_s,
        "flops": flops,
        "flops_per_token": flops / state["tokens"] if state["tokens"] else None,
        "mfu": mfu(flops / train_s, hardware) if train_s and flops else None,
        "peak_memory_bytes": peak_memory,
        "energy_j": state.get("energy_j"),
        "learning_curve": state["curve"],
        "target": cfg.eval.target.model_dump() if cfg.eval.target else None,
        "time_to_target": state["time_to_target"],
        "final": {"validation": final_val, "test": test_metrics},
        "metric": {"name": cfg.eval.metric, "higher_is_better": METRICS[cfg.eval.metric].higher_is_better},
        # wall-clock moments, for start-up and tear-down overheads (benchmarks/train_overhead.py)
        "timestamps": {
            **payload.get("start_timestamps", {}),
            "first_step": state.get("first_step_unix"),
            "last_step": state.get("last_step_unix"),
            "record_written": time.time(),
        },
    }
    if "time_to_target_by_task" in state:  # a multitask run: time to each task's target
        fields["time_to_target_by_task"] = state["time_to_target_by_task"]
    fields |= setup.extras.get("record_fields") or {}  # what the method's prepare() adds (multitask: its tasks)
    fields |= payload.get("record_fields") or {}  # a sweep trial's group, seed and parameters
    return fields
