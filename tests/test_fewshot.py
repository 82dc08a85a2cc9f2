"""The fewshot method, Ray-free: exactly k training rows fed (seeded, independent of the order), a short
fine-tune on them learns, the in-context path (prompts of k demonstrations, zero training, charged its
inference), refusals before any work, and the report's quality-against-k table."""

from __future__ import annotations

import json
import math

import pytest

from ray_t2t.batching import collate_decoder_only, prompts_decoder_only
from ray_t2t.batching.order import SubsetOrder
from ray_t2t.config.experiment import validate_config
from ray_t2t.data import Split, prepare_data
from ray_t2t.errors import ConfigError
from ray_t2t.ledger import write_record
from ray_t2t.methods import Setup, fewshot, get_method
from ray_t2t.reporting import build_report, fewshot_by_k, fewshot_plot
from ray_t2t.tokenizer import PairTokenizer

from conftest import LOCAL_DATA, minimal_config, train_locally

GPT2_TINY = {"preset": "gpt2-tiny"}


def fewshot_config(tmp_path, method: dict, models: dict | None = None, **sections) -> object:
    raw = minimal_config(tmp_path, methods=[{"name": "fewshot", **method}], **sections)
    raw["models"] = models or {"student": {"preset": "t5-tiny"}, "base": {"preset": "t5-tiny"}}
    return validate_config(raw)


def rows_fed(cfg, n_train: int, steps: int, world_size: int = 1, accumulation: int = 1) -> list[list[int]]:
    """Every micro-batch of every rank the loop's order feeds over `steps` optimizer steps: the method's
    train_rows hook and SubsetOrder, built as ray_t2t.training.loop.train_steps builds them."""
    entry = cfg.methods[0]
    setup = Setup(cfg, entry, tokenizer=None, seed=cfg.seed)
    rows = get_method("fewshot").train_rows(setup, n_train)
    orders = [SubsetOrder(rows, cfg.training.batch_size, world_size, rank, cfg.seed) for rank in range(world_size)]
    return [order.indices(micro) for micro in range(steps * accumulation) for order in orders]


# ------------------------------------------------------------------------------ the k training rows


@pytest.mark.parametrize("k, batch_size, world_size", [(8, 128, 1), (64, 16, 1), (100, 32, 2), (512, 64, 1)])
def test_training_feeds_exactly_k_rows(tmp_path, k, batch_size, world_size):
    cfg = fewshot_config(tmp_path, {"k": k}, training={"batch_size": batch_size, "max_steps": 50})
    batches = rows_fed(cfg, 2000, steps=50, world_size=world_size)
    fed = {row for batch in batches for row in batch}
    assert len(fed) == k and fed <= set(range(2000))
    # a micro-batch never holds more rows than there are; every row fed once per epoch (counts differ by <= 1)
    assert all(len(batch) == min(batch_size, k // world_size) for batch in batches)
    counts = [sum(batch.count(row) for batch in batches) for row in fed]
    assert max(counts) - min(counts) <= 1
    order = SubsetOrder(sorted(fed), batch_size, world_size, 0, cfg.seed)
    assert order.rows_fed(50) == k  # what the run record's data.train_examples says
    assert order.rows_fed(0) == 0 and order.rows_fed(1) == min(k, order.global_batch)


def test_the_k_rows_are_fixed_by_the_seed_alone(tmp_path):
    def rows(seed, **training):
        cfg = fewshot_config(tmp_path, {"k": 64}, seed=seed, training={"max_steps": 40, **training})
        return {row for batch in rows_fed(cfg, 2000, steps=40) for row in batch}

    same = rows(0, batch_size=16)
    assert same == rows(0, batch_size=32, group_by_length=False)  # another batch size and order: the same rows
    assert len(same) == 64
    other = rows(1, batch_size=16)
    assert len(other) == 64 and other != same
    # nested: a smaller k's rows are among a larger k's (quality against k compares growing sets)
    assert set(fewshot.select_rows(2000, 8, 0)) <= set(fewshot.select_rows(2000, 64, 0)) == same
    with pytest.raises(ValueError, match="k = 3000"):
        fewshot.select_rows(2000, 3000, 0)


def test_subset_order_is_resumable_and_splits_ranks():
    rows = list(range(10, 60))
    order, again = SubsetOrder(rows, 8, 2, 0, seed=3), SubsetOrder(rows, 8, 2, 0, seed=3)
    other_rank = SubsetOrder(rows, 8, 2, 1, seed=3)
    assert [order.indices(i) for i in range(20)] == [again.indices(i) for i in reversed(range(20))][::-1]
    for micro in range(3):  # global batches inside the first epoch: the two ranks' rows never overlap
        assert not set(order.indices(micro)) & set(other_rank.indices(micro))
    with pytest.raises(ValueError, match="more than once"):
        SubsetOrder([1, 1, 2], 2)


# ------------------------------------------------------------------------------------ in context


def test_the_in_context_prompt_holds_exactly_k_demonstrations(tmp_path):
    tok = PairTokenizer.build(["cat", "dog", "emu", "gnu", "owl"], ["K AE T", "D AO G", "IY M UW", "N UW", "AW L"])
    sources = tok.encode_sources(["cat", "dog", "emu", "gnu", "owl"])
    targets = tok.encode_targets(["K AE T", "D AO G", "IY M UW", "N UW", "AW L"])
    for k in (1, 3):
        demos = list(zip(sources[:k], targets[:k]))
        prefix = fewshot.demonstration_prefix(demos, tok.sep_id)
        # each demonstration exactly as a decoder-only model reads a training example
        trained = collate_decoder_only(sources[:k], targets[:k], tok.pad_id, tok.sep_id)["input_ids"]
        assert prefix == [i for row in trained.tolist() for i in row if i != tok.pad_id]
        cfg = validate_config(
            minimal_config(
                tmp_path,
                models={"student": GPT2_TINY},
                methods=[{"name": "fewshot", "k": k, "mode": "in_context", "model": "student"}],
            )
        )
        setup = Setup(
            cfg, cfg.methods[0], tok, seed=0, extras={"demonstrations": {"rows": list(range(k)), "prefix": prefix}}
        )
        queries = fewshot.prompt_sources(setup, [sources[4], sources[3]])
        input_ids, mask = prompts_decoder_only(queries, tok.pad_id, tok.sep_id)
        for row, query, source in zip(input_ids.tolist(), mask.tolist(), (sources[4], sources[3])):
            prompt = [i for i, m in zip(row, query) if m]
            assert prompt.count(tok.sep_id) == k + 1 and prompt.count(tok.eos_id) == k  # k demos, then the query
            assert prompt == prefix + source[:-1] + [tok.sep_id]
            assert tok.decode_targets([prompt[prompt.index(tok.sep_id) + 1 :]]) == [tok.decode_targets([targets[0]])[0]]
        train_setup = Setup(cfg, cfg.methods[0].model_copy(update={"mode": "train"}), tok, seed=0)
        assert fewshot.prompt_sources(train_setup, sources) is sources  # fine-tuning: the sources as they are


def test_refusals_name_the_key(tmp_path):
    t5 = fewshot_config(tmp_path, {"k": 8, "mode": "in_context"})
    with pytest.raises(ConfigError, match=r"methods\.0\.mode: in_context .* t5 \(encoder-decoder\)"):
        fewshot.check(t5, t5.methods[0])
    big = fewshot_config(tmp_path, {"k": 301})  # minimal_config's training split: 300
    with pytest.raises(ConfigError, match=r"methods\.0\.k: 301 is more than the training split's 300"):
        fewshot.check(big, big.methods[0])
    workers = fewshot_config(tmp_path, {"k": 2}, scaling={"num_workers": 4})
    with pytest.raises(ConfigError, match=r"methods\.0\.k: 2 training examples .*scaling\.num_workers=4"):
        fewshot.check(workers, workers.methods[0])
    with pytest.raises(ConfigError, match=r"methods\.0\.fewshot\.k: .*greater than or equal to 1"):
        fewshot_config(tmp_path, {"k": 0})
    with pytest.raises(ConfigError, match=r"methods\.0\.fewshot\.mode"):
        fewshot_config(tmp_path, {"mode": "zero_shot"})
    fine = fewshot_config(tmp_path, {"k": 8, "mode": "in_context"}, models={"student": GPT2_TINY, "base": GPT2_TINY})
    fewshot.check(fine, fine.methods[0])


# ------------------------------------------------------------------------- runs of the shared loop


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fewshot")
    raw = minimal_config(folder)
    raw["data"] = LOCAL_DATA
    return folder, raw, prepare_data(validate_config(raw))


def run_locally(folder, raw, prepared, name: str, **sections) -> dict:
    cfg = validate_config({**raw, **sections})
    entry = cfg.methods[0]
    extras = fewshot.prepare(cfg, entry, lambda message: None)
    return train_locally(cfg, entry.label or entry.name, prepared.path, folder / name, extras=extras)


def test_fine_tuning_on_k_examples_learns(local):
    """t5-tiny from a fresh init, 60 steps on k = 64 examples (batch 32): the validation loss falls from
    the starting point, and the record counts the 64 rows trained on."""
    folder, raw, prepared = local
    record = run_locally(
        folder,
        raw,
        prepared,
        "train",
        methods=[{"name": "fewshot", "k": 64, "model": "student"}],
        training={"batch_size": 32, "max_steps": 60, "learning_rate": 5e-3, "warmup_steps": 5},
        eval={"every_n_steps": 30, "max_new_tokens": 20},
    )
    losses = [p["val_loss"] for p in record["learning_curve"]]
    assert record["status"] == "finished" and record["steps"] == {"planned": 60, "done": 60}
    assert losses[-1] < 0.8 * losses[0], losses
    assert record["data"]["train_examples"] == 64 and record["cost_basis"] == "training"
    assert record["data"]["tokens_seen"] > 0 and record["times"]["train_s"] > 0


def test_in_context_run_has_no_training_and_is_charged_its_inference(local):
    folder, raw, prepared = local
    k = 4
    record = run_locally(
        folder,
        raw,
        prepared,
        "in_context",
        models={"student": GPT2_TINY},
        methods=[{"name": "fewshot", "k": k, "mode": "in_context", "model": "student"}],
        eval={"max_new_tokens": 20},
    )
    assert record["steps"] == {"planned": 0, "done": 0} and record["times"]["train_s"] == 0
    assert record["data"] == {"task": "g2p_cmudict", "train_examples": k, "tokens_seen": 0}
    assert record["cost_basis"] == "inference" and record["model"]["trainable_params"] == 0
    curve = record["learning_curve"]
    assert len(curve) == 1 and curve[0]["step"] == 0
    assert 0 < curve[0]["wall_s"] == pytest.approx(record["times"]["eval_s"])  # the validation inference
    assert record["device_seconds"] > record["times"]["eval_s"]  # validation + test inference
    assert record["cost"]["total"] == pytest.approx(
        record["device_seconds"] / 3600 * record["cost"]["price_per_device_hour"]
    )
    assert math.isfinite(record["final"]["test"]["wer"]) and math.isfinite(record["final"]["test"]["loss"])
    saved = json.loads((folder / "in_context" / "model" / fewshot.DEMONSTRATIONS_FILE).read_text())
    assert saved["k"] == k and sorted(saved["rows"]) == fewshot.select_rows(len(Split(prepared, "train")), k, 0)
    assert saved["prefix_ids"].count(prepared.tokenizer().sep_id) == k


def test_in_context_prompts_longer_than_the_model_are_refused(local):
    folder, raw, _ = local
    cfg = validate_config(
        {
            **raw,
            "models": {"student": {"preset": "gpt2-tiny", "overrides": {"n_positions": 64}}},
            "methods": [{"name": "fewshot", "k": 8, "mode": "in_context", "model": "student"}],
        }
    )
    with pytest.raises(ConfigError, match=r"methods\.0\.k: 8 demonstrations take \d+ tokens.* has 64; lower k"):
        fewshot.prepare(cfg, cfg.methods[0], lambda message: None)


# ------------------------------------------------------------------------------------- the report


def test_report_lists_quality_against_each_k(tmp_path):
    from test_report import training_record

    run_dir = tmp_path / "shots"
    wer = {8: 0.9, 64: 0.7, 512: 0.5}
    for k, value in wer.items():
        for seed in (0, 1):
            record = training_record(
                "fewshot",
                "fewshot",
                seed,
                100.0 + k,
                600,
                value + 0.01 * seed,
                model="base",
                group=f"fewshot (k={k})",
                params={"k": k, "mode": "train"},
            )
            record["data"]["train_examples"] = k
            write_record(run_dir / "sweep" / f"fewshot-k{k}-seed{seed}", record)
    write_record(run_dir / "runs" / "scratch", training_record("scratch", "scratch", 0, 1000.0, 600, 0.45))
    report = build_report(run_dir, plots=False, formats=("md",))
    markdown = (run_dir / "report" / "report.md").read_text()
    section = markdown.split("## Few-shot: quality against k\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("|")][2:]
    assert [(int(r[2]), r[1].strip()) for r in rows] == [(8, "train"), (64, "train"), (512, "train")]
    assert [float(r[5].split("±")[0]) for r in rows] == pytest.approx([0.905, 0.705, 0.505])
    assert [r[4].strip() for r in rows] == ["8", "64", "512"]
    by_k = report.data["fewshot_by_k"]
    assert [row["k"] for row in by_k] == [8, 64, 512] and all(row["runs"] == 2 for row in by_k)
    [(png, _)] = fewshot_plot(
        run_dir / "report",
        fewshot_by_k([json.loads(p.read_text()) for p in run_dir.glob("sweep/*/record.json")], "wer", "USD", 0.95),
        "wer",
        False,
    )
    assert png.name == "fewshot_quality_vs_k.png" and png.read_bytes()[:4] == b"\x89PNG"
    # one k only: no table
    single = tmp_path / "single"
    write_record(
        single / "runs" / "fewshot",
        training_record("fewshot", "fewshot", 0, 100.0, 600, 0.8, model="base", params={"k": 8, "mode": "train"}),
    )
    build_report(single, plots=False, formats=("md",))
    assert "Few-shot" not in (single / "report" / "report.md").read_text()


def test_a_sweep_over_k_plans_one_group_per_k(tmp_path):
    from ray_t2t.sweeps import plan_trials, trial_config

    tune = {"methods": ["fewshot"], "space": {"fewshot": {"k": [8, 64, 512]}}, "seeds": [0, 1]}
    cfg = fewshot_config(tmp_path, {}, tune=tune, data={"split_sizes": {"train": 1000, "validation": 20, "test": 20}})
    trials = plan_trials(cfg)
    assert [(t["group"], t["seed"]) for t in trials] == [(f"fewshot (k={k})", s) for k in (8, 64, 512) for s in (0, 1)]
    for trial in trials:
        trial_cfg = trial_config(cfg, trial)
        assert (trial_cfg.methods[0].k, trial_cfg.seed) == (trial["params"]["k"], trial["seed"])
        fewshot.check(trial_cfg, trial_cfg.methods[0])  # what a sweep checks before any work
    small = fewshot_config(tmp_path, {}, tune=tune)  # a training split of 300: the k = 512 trials are refused
    big_k = trial_config(small, trials[-1])
    with pytest.raises(ConfigError, match=r"methods\.0\.k: 512 is more than the training split's 300"):
        fewshot.check(big_k, big_k.methods[0])
