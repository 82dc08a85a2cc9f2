"""An exported model is usable with plain transformers: AutoTokenizer loads its tokenizer (a
PreTrainedTokenizerFast with ray_t2t's special tokens), and AutoModel + generate + batch_decode give
exactly ray_t2t's own predictions, for an encoder-decoder (T5) and a decoder-only model (GPT-2). Its
README.md is a model card."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from ray_t2t.config.experiment import validate_config
from ray_t2t.data import Split, load_splits, prepare_data

from conftest import LOCAL_DATA, minimal_config, train_locally

# What a user of the export runs: transformers alone, in a fresh process (no ray_t2t import), printing
# the predictions for the sources given as JSON.
PLAIN = """
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, PreTrainedTokenizerFast
folder, texts = sys.argv[1], json.loads(sys.argv[2])
tokenizer = AutoTokenizer.from_pretrained(folder)
assert isinstance(tokenizer, PreTrainedTokenizerFast), type(tokenizer)
seq2seq = "t5" in open(folder + "/config.json").read()
model = (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_pretrained(folder).eval()
inputs = tokenizer(texts, return_tensors="pt", padding=True)
with torch.no_grad():
    out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
new = out if seq2seq else out[:, inputs["input_ids"].shape[1]:]
print(json.dumps({
    "predictions": tokenizer.batch_decode(new, skip_special_tokens=True),
    "specials": [tokenizer.pad_token, tokenizer.eos_token, tokenizer.sep_token, tokenizer.padding_side],
    "vocab": len(tokenizer),
}))
"""


@pytest.fixture(scope="module", params=["t5-tiny", "gpt2-tiny"])
def exported(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    raw = minimal_config(folder, methods=[{"name": "scratch"}], models={"student": {"preset": request.param}})
    raw["data"] = LOCAL_DATA
    raw["training"] = {"batch_size": 32, "max_steps": 60, "warmup_steps": 2, "learning_rate": 3e-3}
    raw["eval"] = {"every_n_steps": 60}
    cfg = validate_config(raw)
    data = prepare_data(cfg)
    record = train_locally(cfg, "scratch", data.path, folder / "run")
    return cfg, data, record, folder / "run" / "model"


def test_transformers_alone_reproduces_ray_t2ts_predictions(exported):
    import json

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from ray_t2t.decoding import generate
    from ray_t2t.tokenizer import PairTokenizer

    cfg, data, record, model_dir = exported
    sources = [example.source for example in load_splits(cfg.data)["test"][:32]]
    test = Split(data, "test")
    # ray_t2t's own predictions, with the tokenizer it trained with
    tokenizer = PairTokenizer.load(model_dir / "ray_t2t_tokenizer")
    seq2seq = AutoConfig.from_pretrained(model_dir).is_encoder_decoder
    model = (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_pretrained(model_dir)
    with torch.no_grad():
        ours = generate(model, tokenizer, tokenizer.encode_sources(sources), max_new_tokens=24)
    assert tokenizer.encode_sources(sources[:1])[0] == test.source_ids[0]  # the split's own encoding
    done = subprocess.run(
        [sys.executable, "-c", PLAIN, str(model_dir), json.dumps(sources)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=model_dir,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    plain = json.loads(done.stdout.strip().splitlines()[-1])
    assert plain["predictions"] == ours
    assert any(p.strip() for p in ours)  # the model learned to say something
    assert plain["vocab"] == tokenizer.vocab_size
    assert plain["specials"] == ["<pad>", "</s>", "<sep>", "right" if seq2seq else "left"]


def test_the_tokenizer_encodes_a_batch_of_sources_as_ray_t2t_does(exported):
    from transformers import AutoTokenizer

    _, data, _, model_dir = exported
    hf = AutoTokenizer.from_pretrained(model_dir)
    ours = data.tokenizer()
    sources = [source for source, _ in data.summary["splits"]["train"]["samples"]]
    ids = hf(sources)["input_ids"]
    seq2seq = "t5" in (model_dir / "config.json").read_text()
    expected = [s if seq2seq else s + [ours.sep_id] for s in ours.encode_sources(sources)]
    assert ids == expected
    targets = ours.encode_targets([target for _, target in data.summary["splits"]["train"]["samples"]])
    assert hf.batch_decode(targets, skip_special_tokens=True) == ours.decode_targets(targets)


def test_the_export_has_a_model_card(exported):
    cfg, _, record, model_dir = exported
    card = (model_dir / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["library_name"] == "transformers" and "ray_t2t" in front["tags"] and "scratch" in front["tags"]
    assert front["pipeline_tag"] == ("text2text-generation" if "t5" in cfg.models.student.preset else "text-generation")
    assert "| Method | `scratch` (normal) |" in card
    assert f"{record['model']['total_params']:,} parameters" in card
    assert f"`{record['data']['task']}`, {record['data']['train_examples']:,} training examples" in card
    assert "| Cost |" in card and record["cost"]["currency"] in card
    for name, value in record["final"]["test"].items():
        assert f"{name} {value:.4g}" in card
    assert ("AutoModelForSeq2SeqLM" if "t5" in cfg.models.student.preset else "AutoModelForCausalLM") in card


def test_a_model_card_names_the_teacher_and_the_target():
    from ray_t2t.model_card import model_card

    record = {
        "method": "kd_logits",
        "label": "kd",
        "experiment": "quickstart",
        "params": {"alpha": 0.5, "top_k": 32, "name": "kd_logits", "label": None},
        "model": {"family": "encoder_decoder", "architecture": "t5", "total_params": 524224},
        "target": {"metric": "wer", "op": "<=", "value": 0.8},
        "time_to_target": {"step": 721.4, "wall_s": 62.75, "cost": 0.00087},
        "cost": {"total": 0.00088, "currency": "USD", "price_per_device_hour": 0.05},
        "seed": 2,
    }
    card = model_card(record, teachers=["teacher"], kind="distillation")
    assert "| Teacher | `teacher` |" in card and "(distillation)" in card
    assert "alpha=0.5, top_k=32 |" in card
    assert "wer <= 0.8: reached at step 721.4, after 62.75 s of training" in card
    record.pop("time_to_target")
    assert "wer <= 0.8: not reached" in model_card(record)
    assert "AutoPeftModelForSeq2SeqLM" in model_card(record, files=["adapter_config.json", "adapter_model.safetensors"])
    assert "prefix_ids" in model_card(record, files=["config.json", "fewshot_demonstrations.json"])
    assert "peft" not in model_card(record, files=["config.json", "model.safetensors"])
