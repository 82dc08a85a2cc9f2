"""Inference speed of the exported models, measured after training in a step of its own.

    ray-t2t inference CONFIG [section.key=value ...]    # every finished run of the experiment not yet measured
    from ray_t2t.inference import measure_experiment; measure_experiment(cfg)

`ray-t2t run` does this after the sweep, before the report. Each measurement takes

- one exported model at a time, as deployed (a LoRA run's merged export), loaded with plain
  transformers from its folder, with nothing else on its devices: on a CPU, `inference.cpus` cores
  claimed and pinned as a training run claims them (ray_t2t.placement); on a cluster a Ray
  task on a node with the deployed device (`inference.device`, `inference.accelerator_type`);
- a fixed input set: the first `inference.examples` test sources (at batch size 1 the first 16), as
  the run's method prompts them (a fewshot in-context run: its demonstrations first);
- fixed batch sizes (`inference.batch_sizes`, default 1 and eval.batch_size) and a fixed output
  length: greedy decoding of exactly `inference.output_tokens` new tokens per example, so the work
  never depends on when a model happens to stop;
- one warm-up pass, then `inference.repeats` timed passes: the median and range of examples/s and of
  tokens/s (input + output tokens).

Models with one architecture key (config, parameter count, in-context prompt length:
ray_t2t.models.architecture_key) compute the same thing at the same speed whatever their weights, so
each key is measured once, into <storage_path>/<run.name>/inference/<key>.json; the report joins the
runs to it by their record's model.architecture_key.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray_t2t.data import Split, prepare_data
from ray_t2t.decoding import generate_ids
from ray_t2t.errors import UserError
from ray_t2t.ledger import read_record
from ray_t2t.models import architecture_key
from ray_t2t.placement import gpu_placement, own_cores
from ray_t2t.ray_cluster import ensure_ray
from ray_t2t.storage import local_model_path, location, write_atomic
from ray_t2t.tokenizer import PairTokenizer

if TYPE_CHECKING:
    from ray_t2t.config.experiment import ExperimentConfig
    from ray_t2t.storage import StoragePath

INFERENCE_FOLDER = "inference"
DEMONSTRATIONS_FILE = "fewshot_demonstrations.json"  # an in-context fewshot export's prompt (methods.fewshot)
SINGLE_EXAMPLES = 16  # sources decoded one at a time: batch size 1 is slow, its spread small
RECORD_VERSION = 1


def export_key(folder: StoragePath) -> str | None:
    """The architecture key of an export folder (ray_t2t.models.architecture_key), with the length of
    the in-context demonstrations every query of a fewshot in-context export is prompted with."""
    extra = {}
    demonstrations = Path(folder) / DEMONSTRATIONS_FILE
    if demonstrations.is_file():
        extra["prompt_prefix_tokens"] = len(json.loads(demonstrations.read_text()).get("prefix_ids") or [])
    return architecture_key(folder, extra)


def settings_of(cfg: ExperimentConfig) -> dict:
    inference = cfg.inference
    return {
        "examples": inference.examples,
        "single_examples": min(SINGLE_EXAMPLES, inference.examples),
        "output_tokens": inference.output_tokens or cfg.data.max_target_length,
        "batch_sizes": list(inference.batch_sizes or [1, cfg.eval.batch_size]),
        "repeats": inference.repeats,
        "device": inference.device,
        "cpus": inference.cpus,
        "accelerator_type": inference.accelerator_type,
    }


def _settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _inputs(export: Path, sources: list[list[int]], model_vocab: int) -> tuple[object, list[list[int]]]:
    """The export's tokenizer and the sources as it reads them: the experiment's test sources when they
    fit its vocabulary (the usual case), else seeded ids of the same lengths (a multitask model's own
    vocabulary); in-context demonstrations first where the export has them."""

    tokenizer = PairTokenizer.load(export / "ray_t2t_tokenizer")
    if any(i >= model_vocab for source in sources for i in source):
        rng = random.Random(0)
        specials = {tokenizer.pad_id, tokenizer.eos_id, tokenizer.sep_id}
        ordinary = [i for i in range(model_vocab) if i not in specials]
        sources = [[rng.choice(ordinary) for _ in source[:-1]] + [tokenizer.eos_id] for source in sources]
    demonstrations = export / DEMONSTRATIONS_FILE
    if demonstrations.is_file():
        prefix = list(json.loads(demonstrations.read_text()).get("prefix_ids") or [])
        sources = [prefix + list(source) for source in sources]
    return tokenizer, sources


def measure(export: Path, sources: list[list[int]], settings: dict, log: Callable[[str], None] = print) -> dict:
    """Time greedy decoding of `sources` by the model exported in `export` (see the module docstring);
    returns the measurement's results and where it ran. Runs where it is called."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    export = Path(local_model_path(str(export)))
    config = AutoConfig.from_pretrained(export)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    model = auto.from_pretrained(export).eval()
    gpu = settings["device"] == "gpu"
    device = torch.device("cuda") if gpu else torch.device("cpu")
    model.to(device)
    tokenizer, sources = _inputs(export, sources, model.get_input_embeddings().num_embeddings)
    prompt_extra = 0 if config.is_encoder_decoder else 1  # a decoder-only prompt ends with a separator
    length = settings["output_tokens"]
    results = []
    for batch_size in settings["batch_sizes"]:
        inputs = sources[: settings["single_examples"] if batch_size == 1 else settings["examples"]]

        def decode(inputs: list = inputs, batch_size: int = batch_size) -> Any:
            generate_ids(model, tokenizer, inputs, max_new_tokens=length, batch_size=batch_size, exact_length=True)
            if gpu:
                torch.cuda.synchronize(device)

        decode()  # warm-up: first calls allocate, compile kernels and fill caches
        seconds = []
        for _ in range(settings["repeats"]):
            started = time.perf_counter()
            decode()
            seconds.append(time.perf_counter() - started)
        tokens = sum(len(source) + prompt_extra for source in inputs) + length * len(inputs)
        results.append(
            {
                "batch_size": batch_size,
                "examples": len(inputs),
                "input_tokens": tokens - length * len(inputs),
                "output_tokens": length * len(inputs),
                "seconds": _spread(seconds),
                "examples_per_s": _spread([len(inputs) / s for s in seconds]),
                "tokens_per_s": _spread([tokens / s for s in seconds]),
                "latency_s": _spread([s / len(inputs) * batch_size for s in seconds]) if batch_size == 1 else None,
            }
        )
    described = torch.cuda.get_device_name(device) if gpu else f"{torch.get_num_threads()} CPU thread(s)"
    return {"results": results, "device_name": described, "pid": os.getpid()}


def _measure_pinned(export: str, sources: list[list[int]], settings: dict) -> dict:
    """measure() on cores of its own (CPU), the way a training run gets them."""

    if settings["device"] == "gpu":
        return measure(export, sources, settings) | {"placement": gpu_placement()}
    with own_cores(settings["cpus"]) as placement:
        return measure(export, sources, settings) | {"placement": placement}


def _finished_runs(cfg: ExperimentConfig) -> list[dict]:

    experiment = location(cfg.experiment_dir)
    runs = []
    for folder in ("sweep", "runs"):
        for path in sorted((experiment / folder).glob("*/record.json")) if (experiment / folder).is_dir() else []:
            record = read_record(path.parent)
            if record and record.get("status") == "finished" and record.get("kind") != "teacher_inference":
                runs.append(record)
    return runs


def measure_experiment(cfg: ExperimentConfig, log: Callable[[str], None] = print) -> list[dict]:
    """Measure every architecture key of the experiment's finished runs that has no measurement of
    these settings yet; returns the inference-speed records written. Runs without a key (written by
    an older ray_t2t, or an adapter exported alone) are skipped, and said so."""

    settings = settings_of(cfg)
    wanted = _settings_hash(settings)
    folder = location(cfg.experiment_dir) / INFERENCE_FOLDER
    by_key: dict[str, list[dict]] = {}
    for record in _finished_runs(cfg):
        key = (record.get("model") or {}).get("architecture_key")
        if key is None:
            log(
                f"inference: {record.get('label')}: no architecture key in its record (exported by an older "
                "ray_t2t, or an adapter alone): not measured"
            )
            continue
        by_key.setdefault(key, []).append(record)
    todo = {}
    for key, records in by_key.items():
        path = folder / f"{key}.json"
        if path.is_file():
            done = json.loads(path.read_text())
            if done.get("settings_hash") == wanted and done.get("status") == "finished":
                continue
        todo[key] = records
    if not todo:
        log(f"inference: every exported model of {cfg.run.name} is measured ({len(by_key)} architecture(s))")
        return []
    test = Split(prepare_data(cfg, log=log), "test")
    sources = [list(s) for s in test.source_ids[: settings["examples"]]]
    if not sources:
        raise UserError("inference: the test split is empty; nothing to decode")
    remote = _remote_runner(cfg)
    written = []
    for key, records in todo.items():
        runs = sorted(records, key=lambda r: (str(r.get("group") or r.get("label")), r.get("seed") or 0))
        export = runs[0]["model"]["export_path"]
        names = ", ".join(dict.fromkeys(str(r.get("group") or r.get("label")) for r in runs))
        log(
            f"inference: {names}: {runs[0]['model']['total_params'] / 1e6:.2f}M parameters, batch sizes "
            f"{settings['batch_sizes']}, {settings['output_tokens']} new tokens each, {settings['repeats']} repeats"
        )
        measured = remote(export, sources, settings) if remote else _measure_pinned(export, sources, settings)
        record = {
            "record_version": RECORD_VERSION,
            "kind": "inference_speed",
            "status": "finished",
            "architecture_key": key,
            "export_path": export,
            "stands_for": names,
            "params": runs[0]["model"]["total_params"],
            "settings": settings,
            "settings_hash": wanted,
            "device": {
                "type": settings["device"],
                "name": measured["device_name"],
                "placement": measured["placement"],
                "description": f"{measured['device_name']}"
                + (
                    f" on cores {','.join(map(str, measured['placement'].get('cpus') or []))}"
                    if measured["placement"].get("pinned") and settings["device"] == "cpu"
                    else ""
                ),
            },
            "results": measured["results"],
            "measured_unix": time.time(),
            "measured_by_pid": measured["pid"],
        }
        write_atomic(folder / f"{key}.json", json.dumps(record, indent=1, sort_keys=True))
        shown = "; ".join(
            f"batch {r['batch_size']}: {r['examples_per_s']['median']:,.1f} examples/s, "
            f"{r['tokens_per_s']['median']:,.0f} tokens/s"
            for r in record["results"]
        )
        log(f"inference: {names}: {shown}")
        written.append(record)
    return written


def _remote_runner(cfg: ExperimentConfig) -> Any:
    """On a cluster (RAY_ADDRESS), a Ray task on a node with the deployed device; locally None (the
    measurement runs in this process, on cores it claims)."""
    if not os.environ.get("RAY_ADDRESS"):
        return None
    import ray

    ensure_ray(cfg.inference.device == "gpu")
    inference = cfg.inference
    options = {"num_cpus": inference.cpus, "num_gpus": 1 if inference.device == "gpu" else 0}
    if inference.accelerator_type:
        options["accelerator_type"] = inference.accelerator_type
    task = ray.remote(**options)(_measure_pinned)
    return lambda export, sources, settings: ray.get(task.remote(export, sources, settings))
