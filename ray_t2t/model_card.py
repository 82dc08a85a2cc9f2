"""The model card (README.md, Hugging Face's format) of an exported model: what trained it and what it
cost, and how to use it with plain transformers.

    text = model_card(record, teachers=["runs/teacher/model"])   # record: the run's record fields
"""

from __future__ import annotations

import json
from typing import Any

from ray_t2t import __version__


def _number(value: Any, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}g}"


def _usage(encoder_decoder: bool) -> str:
    if encoder_decoder:
        return """```python
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
model = AutoModelForSeq2SeqLM.from_pretrained("path/to/this/folder")
inputs = tokenizer(["your input"], return_tensors="pt", padding=True)
outputs = model.generate(**inputs, max_new_tokens=64, do_sample=False)
print(tokenizer.batch_decode(outputs, skip_special_tokens=True))
```"""
    return """```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")  # pads on the left
model = AutoModelForCausalLM.from_pretrained("path/to/this/folder")
inputs = tokenizer(["your input"], return_tensors="pt", padding=True)  # input, end, separator
outputs = model.generate(**inputs, max_new_tokens=64, do_sample=False)
print(tokenizer.batch_decode(outputs[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```"""


def model_card(
    record: dict, teachers: list[str] | None = None, kind: str | None = None, files: list[str] | None = None
) -> str:
    """README.md for the model a run exported, from its record fields (ray_t2t.run_record.RunRecord);
    `teachers`: what the method learned from, `kind`: "distillation", "normal" or "alternative",
    `files`: the names in the export folder (adapters or few-shot demonstrations change the usage)."""
    model, data, cost = record.get("model") or {}, record.get("data") or {}, record.get("cost") or {}
    encoder_decoder = model.get("family") != "decoder_only"
    method = record.get("method", "?")
    params = {k: v for k, v in (record.get("params") or {}).items() if v is not None and k not in ("name", "label")}
    hardware = record.get("hardware") or {}
    placement = hardware.get("placement") or {}
    devices = f"{_number(hardware.get('devices'))} {hardware.get('device_type', '?')} device(s)"
    if placement.get("pinned") and placement.get("cpus"):
        devices += f" (cores {','.join(map(str, placement['cpus']))})"
    target, reached = record.get("target") or {}, record.get("time_to_target") or {}
    if not target:
        to_target = "no target set"
    elif reached:
        to_target = (
            f"{target.get('metric')} {target.get('op')} {target.get('value')}: reached at step "
            f"{_number(reached.get('step'))}, after {_number(reached.get('wall_s'))} s of training "
            f"({_number(reached.get('cost'))} {cost.get('currency', '')})"
        )
    else:
        to_target = f"{target.get('metric')} {target.get('op')} {target.get('value')}: not reached"
    test = (record.get("final") or {}).get("test") or {}
    tags = ["ray_t2t", method] + ([kind] if kind else [])
    header = {
        "library_name": "transformers",
        "pipeline_tag": "text2text-generation" if encoder_decoder else "text-generation",
        "tags": tags,
    }
    rows = [
        ("Method", f"`{method}`" + (f" ({kind})" if kind else "")),
        ("Parameters of the method", ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(params.items())) or "—"),
        ("Teacher", ", ".join(f"`{t}`" for t in teachers) if teachers else "none"),
        ("Model", f"{model.get('architecture', '?')}, {_number(model.get('total_params'))} parameters"),
        ("Task", f"`{data.get('task', '?')}`, {_number(data.get('train_examples'))} training examples"),
        ("Tokens seen", _number(data.get("tokens_seen"))),
        ("Test metrics", ", ".join(f"{k} {_number(v)}" for k, v in sorted(test.items())) or "—"),
        ("Training time", f"{_number((record.get('times') or {}).get('train_s'))} s of optimizer steps on {devices}"),
        ("Device-hours", _number((record.get("device_seconds") or 0) / 3600)),
        (
            "Cost",
            f"{_number(cost.get('total'))} {cost.get('currency', '')} at "
            f"{_number(cost.get('price_per_device_hour'))} per device-hour",
        ),
        ("Time to target", to_target),
        ("Seed", str(record.get("seed", "—"))),
        ("Experiment", f"`{record.get('experiment', '?')}`, run `{record.get('label', '?')}`"),
    ]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    notes = []
    if "adapter_config.json" in (files or []):
        notes.append(
            "This folder holds LoRA adapters, not merged weights: load it with peft "
            "(`AutoPeftModelForSeq2SeqLM` / `AutoPeftModelForCausalLM`), or train with `merge_on_export: true`."
        )
    if "fewshot_demonstrations.json" in (files or []):
        notes.append(
            "In-context few-shot: the model answers after the demonstrations in `fewshot_demonstrations.json`; "
            "put their `prefix_ids` before each input's ids."
        )
    front = "\n".join(f"{k}: {json.dumps(v)}" for k, v in header.items())
    return f"""---
{front}
---

# {record.get("experiment", "?")} / {record.get("label", "?")}

A {model.get("architecture", "?")} model trained with ray_t2t {__version__} by `{method}`. The figures are
this one run's (seed {record.get("seed", "—")}), and its cost is its own training: the experiment's
report adds what a teacher cost and compares the methods over several seeds, with intervals.

| | |
|---|---|
{table}

## Use

{_usage(encoder_decoder)}

The tokenizer encodes inputs and decodes outputs as ray_t2t did in training and evaluation.
`ray_t2t_tokenizer/` holds ray_t2t's own copy of it.
{"".join(chr(10) + note + chr(10) for note in notes)}"""
