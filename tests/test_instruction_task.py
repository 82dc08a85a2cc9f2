"""Decoder-only training at instruction shapes from local files: documents of up to 512 tokens, summaries
of up to 128, the loss on the summary only, packed batches; and a model whose learned positions are
too few for such data is refused with a message, not an index error mid-run."""

from __future__ import annotations

import json
import random

import pytest

from ray_t2t.batching import collate_decoder_only
from ray_t2t.config.experiment import validate_config
from ray_t2t.data import Split, prepare_data

from conftest import minimal_config, train_locally

TRAINING = {"batch_size": 16, "max_steps": 60, "warmup_steps": 5, "learning_rate": 3e-3, "group_by_length": False}


def write_summaries(path, count: int, seed: int) -> None:
    """JSON lines {document, summary}: a document of 10-36 sentences of 8-14 words (up to ~500 words),
    its summary its first 1 to 8 sentences (up to ~120 words; one word a token)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(120)]
    with path.open("w") as out:
        for _ in range(count):
            sentences = [" ".join(rng.choices(words, k=rng.randint(8, 14))) + " ." for _ in range(rng.randint(10, 36))]
            summary = " ".join(sentences[: rng.randint(1, 8)])
            out.write(json.dumps({"document": " ".join(sentences), "summary": summary}) + "\n")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("summaries")
    paths = {}
    for split, count, seed in (("train", 1200, 0), ("validation", 24, 1), ("test", 24, 2)):
        paths[split] = folder / f"{split}.jsonl"
        write_summaries(paths[split], count, seed)
    return {split: str(path) for split, path in paths.items()}


def experiment(tmp_path, files, student: dict) -> dict:
    raw = minimal_config(tmp_path, methods=[{"name": "scratch"}], models={"student": student})
    raw["data"] = {
        "task": "files",
        "files": files,
        "source_column": "document",
        "target_column": "summary",
        "split_sizes": {"train": 1200, "validation": 24, "test": 24},
        "max_source_length": 512,
        "max_target_length": 128,
        "tokenizer": {"source_level": "word", "target_level": "word"},
    }
    raw["training"] = TRAINING | {"packing": True}
    raw["eval"] = {"every_n_steps": 30, "metric": "rouge_l", "max_new_tokens": 32, "batch_size": 24}
    return raw


def test_a_decoder_only_student_learns_to_summarize_long_documents_packed(tmp_path, files):
    cfg = validate_config(experiment(tmp_path, files, {"preset": "llama-tiny"}))
    data = prepare_data(cfg)
    train = Split(data, "train")
    sources, targets = train.source_ids.lengths(), train.target_ids.lengths()
    assert 400 < max(sources) <= 512 and 100 < max(targets) <= 128  # realistic lengths, nothing cut
    assert data.summary["splits"]["train"]["truncated"] == {"source": 0, "target": 0}
    # the loss is on the summary only: every document token (and the separator) is labelled -100
    tokenizer = data.tokenizer()
    batch = collate_decoder_only([train.source_ids[i] for i in range(4)], [train.target_ids[i] for i in range(4)],
                                 tokenizer.pad_id, tokenizer.sep_id)  # fmt: skip
    assert int((batch["labels"] != -100).sum()) == sum(targets[:4])
    record = train_locally(cfg, "scratch", data.path, tmp_path / "run")
    first, last = record["learning_curve"][0], record["learning_curve"][-1]
    assert record["status"] == "finished" and record["steps"]["done"] == TRAINING["max_steps"]
    assert last["val_loss"] < first["val_loss"], record["learning_curve"]
    assert last["val_token_accuracy"] > first["val_token_accuracy"], record["learning_curve"]


def test_a_model_with_too_few_positions_for_the_data_is_refused_by_name(tmp_path, files):
    raw = experiment(tmp_path, files, {"preset": "gpt2-tiny"})  # 512 learned positions
    raw["eval"]["max_new_tokens"] = 128  # decoding a summary of up to 128 tokens after a ~470-token document
    cfg = validate_config(raw)
    data = prepare_data(cfg)
    with pytest.raises(RuntimeError) as failed:
        train_locally(cfg, "scratch", data.path, tmp_path / "run")
    message = str(failed.value)
    assert "models.student: the data's longest source + target is" in message
    assert "but the model has 512 positions" in message
    assert "IndexError" not in message and "index out of range" not in message
