"""Inference speed measured after training (ray_t2t.inference): fixed output length, one measurement
per architecture, reused on reruns, joined to the runs by the report. Ray-free."""

import json

import pytest

from ray_t2t.config.experiment import validate_config
from ray_t2t.config.sections import ModelSpec
from ray_t2t.decoding import generate_ids
from ray_t2t.inference import export_key, measure, measure_experiment
from ray_t2t.ledger import write_record
from ray_t2t.models import build_model, exported_parameters

from conftest import minimal_config, save_like_an_export


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, torch_one_thread):
    """A config, its prepared data, and two exports of one architecture (other weights) and one of another."""
    from ray_t2t.data import prepare_data

    folder = tmp_path_factory.mktemp("inference")
    raw = minimal_config(folder)
    raw["inference"] = {"examples": 8, "batch_sizes": [1, 8], "repeats": 2, "output_tokens": 6}
    cfg = validate_config(raw)
    tokenizer = prepare_data(cfg, log=lambda message: None).tokenizer()
    exports = {}
    for label, seed, spec in (
        ("scratch", 0, {"preset": "t5-tiny"}),
        ("finetune", 1, {"preset": "t5-tiny"}),
        ("teacher", 0, {"preset": "t5-tiny", "overrides": {"num_layers": 2}}),
    ):
        model, _ = build_model(ModelSpec(**spec), tokenizer, seed=seed)
        exports[label] = save_like_an_export(model, tokenizer, cfg.experiment_dir / "runs" / label / "model")
    return cfg, tokenizer, exports


def record_of(label, export):
    return {
        "status": "finished",
        "label": label,
        "seed": 0,
        "method": "scratch",
        "model": {
            "export_path": str(export),
            "total_params": exported_parameters(export),
            "architecture_key": export_key(export),
        },
    }


def test_exact_length_decodes_every_source_to_the_same_length(experiment):
    cfg, tokenizer, exports = experiment
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(exports["scratch"])
    sources = tokenizer.encode_sources(["cat", "dictionary", "a"])
    free = generate_ids(model, tokenizer, sources, max_new_tokens=12)
    exact = generate_ids(model, tokenizer, sources, max_new_tokens=12, exact_length=True)
    assert [len(ids) for ids in exact] == [12, 12, 12]
    assert all(len(ids) <= 12 for ids in free)


def test_one_architecture_one_key_whatever_the_weights(experiment):
    _, _, exports = experiment
    assert export_key(exports["scratch"]) == export_key(exports["finetune"])
    assert export_key(exports["teacher"]) != export_key(exports["scratch"])
    assert exported_parameters(exports["teacher"]) > exported_parameters(exports["scratch"])


def test_measure_times_a_fixed_amount_of_work(experiment):
    cfg, tokenizer, exports = experiment
    sources = tokenizer.encode_sources(["cat", "dog", "house", "a", "tree", "stone", "bird", "river"])
    settings = {
        "examples": 8,
        "single_examples": 2,
        "output_tokens": 5,
        "batch_sizes": [1, 4],
        "repeats": 3,
        "device": "cpu",
        "cpus": 1,
        "accelerator_type": None,
    }
    result = measure(exports["scratch"], sources, settings)
    one, batched = result["results"]
    assert (one["batch_size"], one["examples"], batched["examples"]) == (1, 2, 8)
    assert batched["output_tokens"] == 8 * 5 and batched["input_tokens"] == sum(len(s) for s in sources)
    for r in result["results"]:
        assert r["seconds"]["min"] <= r["seconds"]["median"] <= r["seconds"]["max"]
        assert r["examples_per_s"]["median"] == pytest.approx(r["examples"] / r["seconds"]["median"])
        assert r["tokens_per_s"]["median"] == pytest.approx(
            (r["input_tokens"] + r["output_tokens"]) / r["seconds"]["median"]
        )
    assert one["latency_s"]["median"] == pytest.approx(one["seconds"]["median"] / 2)


def test_each_architecture_is_measured_once_and_reused(experiment):
    cfg, _, exports = experiment
    for label, export in exports.items():
        write_record(export.parent, record_of(label, export))
    lines = []
    written = measure_experiment(cfg, log=lines.append)
    assert len(written) == 2  # scratch and finetune share one architecture
    shared = next(r for r in written if r["architecture_key"] == export_key(exports["scratch"]))
    assert shared["stands_for"] == "finetune, scratch"
    assert shared["device"]["placement"]["pinned"] and len(shared["device"]["placement"]["cpus"]) == 1
    assert [r["batch_size"] for r in shared["results"]] == [1, 8]
    files = sorted((cfg.experiment_dir / "inference").glob("*.json"))
    assert len(files) == 2 and json.loads(files[0].read_text())["kind"] == "inference_speed"
    assert measure_experiment(cfg, log=lines.append) == []  # reused
    changed = validate_config(
        cfg.model_dump(mode="json") | {"inference": {"examples": 8, "repeats": 1, "batch_sizes": [1, 8]}}
    )
    assert len(measure_experiment(changed, log=lines.append)) == 2  # other settings: measured again


def test_the_report_joins_the_measurement_to_every_run_of_its_architecture(experiment, tmp_path):
    from test_report import training_record

    from ray_t2t.inference import settings_of
    from ray_t2t.reporting import build_report

    cfg, _, exports = experiment
    run_dir = tmp_path / "x"
    key = export_key(exports["scratch"])
    for label in ("scratch", "finetune"):
        for seed in range(2):
            write_record(
                run_dir / "sweep" / f"{label}-{seed}",
                training_record(label, label, seed, 100.0 + seed, 300, 0.4, group=label, architecture_key=key),
            )
    speed = {
        "kind": "inference_speed",
        "status": "finished",
        "architecture_key": key,
        "settings": settings_of(cfg),
        "device": {"description": "1 CPU thread(s) on cores 0"},
        "results": [
            {"batch_size": 1, "examples_per_s": {"median": 50.0}, "tokens_per_s": {"median": 900.0}},
            {"batch_size": 8, "examples_per_s": {"median": 300.0}, "tokens_per_s": {"median": 5400.0}},
        ],
    }
    (run_dir / "inference").mkdir()
    (run_dir / "inference" / f"{key}.json").write_text(json.dumps(speed))
    report = build_report(run_dir, plots=False, formats=("md",))
    markdown = (run_dir / "report" / "report.md").read_text()
    section = markdown.split("## Inference speed\n", 1)[1].split("\n## ", 1)[0]
    assert "| scratch | 520,000 | 50 | 900 | 300 | 5400 |" in section
    assert "| finetune | 520,000 | 50 | 900 | 300 | 5400 |" in section
    assert all(g["inference_speed"]["architecture_key"] == key for g in report.data["groups"])


@pytest.mark.ray
def test_on_a_cluster_the_measurement_is_a_ray_task_on_cores_of_its_own(experiment, monkeypatch):
    """With RAY_ADDRESS set (a job on a cluster) each model is measured by a Ray task that asks for
    inference.cpus (and a GPU of inference.accelerator_type where one is deployed), pinned there."""
    import os

    import ray

    from ray_t2t.ray_cluster import start_local_ray

    cfg, _, exports = experiment
    for label, export in exports.items():
        write_record(export.parent, record_of(label, export))
    moved = validate_config(
        cfg.model_dump(mode="json")
        | {"inference": {"examples": 8, "repeats": 1, "batch_sizes": [1, 4], "output_tokens": 3}}
    )
    start_local_ray({"env_vars": {"RAY_T2T_CORE_LOCKS": os.environ["RAY_T2T_CORE_LOCKS"]}}, num_cpus=2)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # as under `ray job submit`; Ray is already joined
    try:
        written = measure_experiment(moved, log=lambda message: None)
        driver = os.getpid()
        assert len(written) == 2
        for record in written:
            placement = record["device"]["placement"]
            assert placement["pinned"] and len(placement["cpus"]) == 1
            assert record["results"][1]["examples_per_s"]["median"] > 0
        assert all(r["measured_by_pid"] != driver for r in written)  # not in the driver's process
    finally:
        ray.shutdown()
