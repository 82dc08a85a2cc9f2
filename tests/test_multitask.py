"""The embedded p2g_cmudict and num2words tasks, and the multitask method: config checks, the pooled
prepared dataset, training order by the task mixture, per-task evaluation through the shared loop
(Ray-free, one subprocess), and the report's multi-task table. Ray-free."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from ray_t2t.batching.order import MixtureOrder, mixture_probabilities
from ray_t2t.config.experiment import validate_config
from ray_t2t.config.sections import DataSection
from ray_t2t.data import (
    Split,
    load_g2p_cmudict,
    load_num2words,
    load_p2g_cmudict,
    load_splits,
    make_splits,
    prepare_data,
    prepare_multitask,
)
from ray_t2t.errors import ConfigError, DataError
from ray_t2t.methods import get_method

from conftest import minimal_config, train_locally

CHAR = {"source_level": "char", "target_level": "char"}


def section(**data) -> DataSection:
    return DataSection(**({"split_sizes": {"train": 2000, "validation": 50, "test": 100}} | data))


def words(examples) -> list[str]:
    return [e.source for e in examples]


# ------------------------------------------------------------------------------------- the tasks


@pytest.fixture(scope="module")
def g2p_and_p2g():
    data = section()
    return make_splits(load_g2p_cmudict(data), data), load_p2g_cmudict(data)


def test_p2g_uses_the_g2p_word_split_so_test_words_never_leak(g2p_and_p2g):
    g2p, p2g = g2p_and_p2g
    for split in ("train", "validation", "test"):
        g2p_words = set(words(g2p[split]))
        # every target is a word of the same g2p split, and every word of it is spelled by some example
        assert {e.target for e in p2g[split]} <= g2p_words
        assert {w for e in p2g[split] for w in e.references if w in g2p_words} == g2p_words
        # one example per distinct pronunciation of the split's words
        assert len(p2g[split]) == len({p for e in g2p[split] for p in e.references})
        assert len({e.source for e in p2g[split]}) == len(p2g[split])
    train_targets = {e.target for e in p2g["train"]}
    assert not train_targets & set(words(g2p["test"])) and not train_targets & set(words(g2p["validation"]))
    # reproducible, and the evaluation splits do not move with the training size
    again = load_p2g_cmudict(section())
    assert [(e.source, e.references) for e in again["test"]] == [(e.source, e.references) for e in p2g["test"]]
    bigger = load_p2g_cmudict(section(split_sizes={"train": 4000, "validation": 50, "test": 100}))
    assert [e.source for e in bigger["test"]] == [e.source for e in p2g["test"]]


def test_p2g_lists_every_spelling_of_a_pronunciation():
    everything = load_p2g_cmudict(DataSection(split_sizes={"train": None, "validation": 1, "test": 1}))
    by_source = {e.source: e for split in everything.values() for e in split}
    assert {"there", "their", "they're"} <= set(by_source["DH EH R"].references)
    assert by_source["DH EH R"].target == by_source["DH EH R"].references[0]
    assert by_source["HH AH L OW"].references == ("hello",)


def test_num2words_splits_by_number_in_every_language():
    data = section(
        task="num2words",
        num2words={"languages": ["en", "de", "fr"], "max_number": 9999},
        split_sizes={"train": 500, "validation": 20, "test": 30},
    )
    splits = load_splits(data)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [1500, 60, 90]
    number = {s: {e.source.split(": ")[1] for e in examples} for s, examples in splits.items()}
    assert not number["train"] & number["test"] and not number["train"] & number["validation"]
    by_source = {e.source: e for examples in splits.values() for e in examples}
    some = sorted(number["test"])[0]
    from num2words import num2words

    for lang in ("en", "de", "fr"):
        assert by_source[f"{lang}: {some}"].target == num2words(int(some), lang=lang)
    assert [e.source for e in load_splits(data)["test"]] == [e.source for e in splits["test"]]
    assert load_num2words(data.model_copy(update={"split_seed": 1}))["test"] != splits["test"]
    with pytest.raises(DataError, match=r"data.split_sizes.train=20000 but only 9950"):
        load_splits(data.model_copy(update={"split_sizes": data.split_sizes.model_copy(update={"train": 20000})}))


def test_new_tasks_get_their_tokenizer_levels_and_prepare(tmp_path):
    p2g = validate_config(
        minimal_config(
            tmp_path, data={"task": "p2g_cmudict", "split_sizes": {"train": 300, "validation": 20, "test": 20}}
        )
    )
    assert (p2g.data.tokenizer.source_level, p2g.data.tokenizer.target_level) == ("word", "char")
    n2w = validate_config(minimal_config(tmp_path, data={"task": "num2words", "tokenizer": {"target_level": "byte"}}))
    assert (n2w.data.tokenizer.source_level, n2w.data.tokenizer.target_level) == ("char", "byte")
    g2p = validate_config(minimal_config(tmp_path))
    assert (g2p.data.tokenizer.source_level, g2p.data.tokenizer.target_level) == ("char", "word")
    prepared = prepare_data(p2g)
    row = prepared.read_split("test").to_pylist()[0]
    assert prepared.tokenizer().decode_targets([row["target_ids"]]) == [row["target"]]
    assert len(row["source_ids"]) == len(row["source"].split()) + 1  # one token per phoneme, and </s>
    with pytest.raises(ConfigError, match=r"data.num2words.languages: unknown num2words language\(s\) 'xx'"):
        validate_config(minimal_config(tmp_path, data={"task": "num2words", "num2words": {"languages": ["en", "xx"]}}))


# ------------------------------------------------------------------------------------ the config


def multitask_raw(tmp_path, tasks, **entry):
    raw = minimal_config(tmp_path, methods=[{"name": "multitask", "tasks": tasks, **entry}])
    raw["data"] = dict(raw["data"], tokenizer=CHAR)
    return raw


@pytest.mark.parametrize(
    "tasks, entry, message",
    [
        (["g2p_cmudict", "p2g_cmudit"], {}, r"methods.0.multitask.tasks.1.task: Input should be 'g2p_cmudict'"),
        (["g2p_cmudict", "p2g_cmudict"], {"mixing": "fixed"}, r"tasks.0.weight: mixing: fixed needs a weight"),
        (
            [{"task": "g2p_cmudict", "weight": -1}, {"task": "p2g_cmudict", "weight": 1}],
            {"mixing": "fixed"},
            r"methods.0.multitask.tasks.0.weight: Input should be greater than or equal to 0",
        ),
        (
            [{"task": "g2p_cmudict", "weight": 0}, {"task": "p2g_cmudict", "weight": 0}],
            {"mixing": "fixed"},
            r"weights sum to 0",
        ),
        (
            [{"task": "g2p_cmudict", "weight": 2}, "p2g_cmudict"],
            {},
            r"tasks.0.weight: weights are used with mixing: fixed",
        ),
        (["g2p_cmudict", "g2p_cmudict"], {}, r"the name\(s\) g2p are used twice"),
        ([{"task": "g2p_cmudict", "wieght": 1}], {}, r"section 'methods.0.tasks.0': unknown key 'wieght'"),
        (["g2p_cmudict"], {"temperature": 0}, r"methods.0.multitask.temperature: Input should be greater than 0"),
    ],
)
def test_bad_multitask_entries_name_the_key(tmp_path, tasks, entry, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(multitask_raw(tmp_path, tasks, **entry))


def test_multitask_check_refuses_what_the_tasks_cannot_use(tmp_path):
    method = get_method("multitask")
    raw = multitask_raw(tmp_path, ["g2p_cmudict", "p2g_cmudict"])
    raw["data"]["tokenizer"] = {}  # char source, word target: p2g's spellings would be whole-word tokens
    cfg = validate_config(raw)
    with pytest.raises(ConfigError, match=r"methods.0.tasks.1 \(p2g_cmudict\): data.tokenizer.target_level is word"):
        method.check(cfg, cfg.methods[0])
    cfg = validate_config(multitask_raw(tmp_path, ["g2p_cmudict", "files"]))
    with pytest.raises(ConfigError, match=r"methods.0.tasks.1 \(files\): task 'files' needs data.files"):
        method.check(cfg, cfg.methods[0])
    cfg = validate_config(multitask_raw(tmp_path, ["g2p_cmudict", "num2words"]))
    method.check(cfg, cfg.methods[0])
    assert [t.prefix for t in cfg.methods[0].tasks] == ["g2p: ", "n2w: "]


# ---------------------------------------------------------------------------- mixture and order


def test_mixture_probabilities():
    sizes = {"a": 8000, "b": 2000, "c": 500}
    assert mixture_probabilities(sizes, "proportional") == pytest.approx(
        {"a": 8 / 10.5, "b": 2 / 10.5, "c": 0.5 / 10.5}
    )
    tempered = mixture_probabilities(sizes, "temperature", temperature=2)
    root = {k: v**0.5 for k, v in sizes.items()}
    assert tempered == pytest.approx({k: v / sum(root.values()) for k, v in root.items()})
    assert mixture_probabilities(sizes, "temperature", temperature=1) == pytest.approx(
        mixture_probabilities(sizes, "proportional")
    )
    assert mixture_probabilities(sizes, "fixed", weights={"a": 1, "b": 1, "c": 2}) == {"a": 0.25, "b": 0.25, "c": 0.5}


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    """A prepared multitask dataset of three tasks of very different sizes."""
    folder = tmp_path_factory.mktemp("multitask_data")
    tasks = [
        {"task": "g2p_cmudict", "split_sizes": {"train": 3000, "validation": 40, "test": 40}},
        {"task": "p2g_cmudict", "split_sizes": {"train": 1000, "validation": 40, "test": 40}},
        {
            "task": "num2words",
            "split_sizes": {"train": 100, "validation": 20, "test": 20},
            "num2words": {"languages": ["en", "de"], "max_number": 999},
        },
    ]
    cfg = validate_config(multitask_raw(folder, tasks))
    return cfg, prepare_multitask(cfg, cfg.methods[0])


def test_multitask_dataset_is_pooled_prefixed_cached_and_keeps_the_word_split(pooled, tmp_path):
    cfg, data = pooled
    assert data.path.name.startswith("multitask-") and data.summary["task"] == "multitask"
    assert {k: v["examples"]["train"] for k, v in data.summary["tasks"].items()} == {
        "g2p": 3000,
        "p2g": data.summary["tasks"]["p2g"]["examples"]["train"],
        "n2w": 200,
    }
    again = prepare_multitask(cfg, cfg.methods[0])
    assert again.reused and again.path == data.path
    test = data.read_split("test").to_pylist()
    tasks = Counter(row["task"] for row in test)
    assert tasks["g2p"] == 40 and tasks["n2w"] == 40 and tasks["p2g"] >= 40
    for row in test:
        assert row["source"].startswith(f"{row['task']}: ")
    g2p_test = {row["source"].removeprefix("g2p: ") for row in test if row["task"] == "g2p"}
    p2g_test = {row["target"] for row in test if row["task"] == "p2g"}
    assert p2g_test <= g2p_test
    tok = data.tokenizer()
    assert tok.meta["source_level"] == tok.meta["target_level"] == "char"
    assert tok.decode_targets([test[0]["target_ids"]]) == [test[0]["target"]]
    assert Split(data, "validation").tasks[:1] == ["g2p"]
    assert not [p for p in data.path.parent.iterdir() if p.name.startswith(".staging")]


@pytest.mark.parametrize("group_by_length", [True, False])
@pytest.mark.parametrize(
    "mixing, entry",
    [
        ("proportional", {}),
        ("temperature", {"temperature": 3.0}),
        ("fixed", {"weights": [1, 1, 2]}),
    ],
)
def test_training_order_follows_the_mixture(pooled, mixing, entry, group_by_length):
    """The method's batch_order over the real pooled dataset: the task shares of 256 steps of 64
    examples (16,384 draws, four whole pools of length-grouped batches) match the mixture within
    0.015 (~3.5 standard deviations), and any step is the same when asked first (a resumed run)."""
    cfg, data = pooled
    tasks = [t.model_copy(update={"weight": w}) for t, w in zip(cfg.methods[0].tasks, entry.get("weights", [None] * 3))]
    params = cfg.methods[0].model_copy(
        update={"mixing": mixing, "tasks": tasks, "temperature": entry.get("temperature", 2.0)}
    )
    method = get_method("multitask")
    setup = type("S", (), {"params": params})
    train = Split(data, "train")
    lengths = [len(s) + len(t) for s, t in zip(train.source_ids, train.target_ids)]
    order = method.batch_order(setup, data, lengths, 64, 1, 0, 0, group_by_length)
    sizes = {name: info["examples"]["train"] for name, info in data.summary["tasks"].items()}
    expected = mixture_probabilities(sizes, mixing, params.temperature, {t.name: t.weight for t in tasks})
    steps = 256
    drawn = Counter(train.tasks[i] for step in range(steps) for i in order.indices(step))
    assert sum(drawn.values()) == steps * 64
    for task, p in expected.items():
        assert drawn[task] / (steps * 64) == pytest.approx(p, abs=0.015), (mixing, drawn, expected)
    fresh = method.batch_order(setup, data, lengths, 64, 1, 0, 0, group_by_length)
    assert fresh.indices(150) == order.indices(150) and fresh.indices(3) == order.indices(3)
    # the small task repeats (a fresh permutation per pass), the large one is not exhausted
    if mixing == "fixed":
        assert drawn["n2w"] > 2 * sizes["n2w"]


def test_mixture_order_splits_global_batches_across_ranks_and_depends_on_the_seed():
    tasks = ["a"] * 500 + ["b"] * 300
    lengths = [i % 17 for i in range(800)]
    probs = {"a": 0.5, "b": 0.5}
    ranks = [MixtureOrder(tasks, probs, lengths, 16, world_size=2, rank=r, seed=3) for r in (0, 1)]
    alone = MixtureOrder(tasks, probs, lengths, 32, seed=3)  # the same global batches on one worker
    for step in (0, 5, 70):
        first, second = ranks[0].indices(step), ranks[1].indices(step)
        assert len(first) == len(second) == 16 and first + second == alone.indices(step)
    other = MixtureOrder(tasks, probs, lengths, 16, world_size=2, rank=0, seed=4)
    assert [other.indices(s) for s in range(5)] != [ranks[0].indices(s) for s in range(5)]
    with pytest.raises(ValueError, match="task\\(s\\) c with no training examples"):
        MixtureOrder(tasks, {"a": 0.5, "c": 0.5}, lengths, 16)


# --------------------------------------------------------------------- training through the loop


@pytest.mark.usefixtures("torch_one_thread")
def test_a_short_multitask_run_learns_every_task_and_records_them(tmp_path):
    """40 steps of a small T5 on g2p + p2g through the shared loop (no Ray): per-task validation
    figures in every curve point, each task's loss falls, per-task test metrics and time to target."""
    tasks = [
        {"task": "g2p_cmudict", "target": "per <= 100"},  # met at once: time to target at step 0
        {"task": "p2g_cmudict", "target": "wer <= 0.0"},
    ]  # never met in 40 steps
    raw = multitask_raw(tmp_path, tasks, mixing="temperature")
    raw["data"] |= {
        "split_sizes": {"train": 2000, "validation": 32, "test": 32},
        "max_source_length": 80,
        "max_target_length": 80,
    }
    raw["models"] = {"student": {"preset": "t5-tiny", "overrides": {"d_model": 64, "d_ff": 128, "d_kv": 32}}}
    raw["training"] = {"batch_size": 32, "max_steps": 40, "warmup_steps": 4, "learning_rate": 5e-3}
    raw["eval"] = {"every_n_steps": 20, "max_new_tokens": 24, "batch_size": 64, "target": "per <= 100"}
    cfg = validate_config(raw)
    entry = cfg.methods[0]
    extras = get_method("multitask").prepare(cfg, entry, lambda message: None)
    assert json.loads(json.dumps(extras)) == extras  # it travels to the workers as JSON
    record = train_locally(cfg, "multitask", prepare_data(cfg).path, tmp_path / "run", extras=extras)
    curve = record["learning_curve"]
    assert [p["step"] for p in curve] == [0, 20, 40]
    for point in curve:
        for key in (
            "val_wer",
            "val_wer_g2p",
            "val_wer_p2g",
            "val_per_g2p",
            "val_loss_g2p",
            "val_loss_p2g",
            "val_token_accuracy_p2g",
            "val_exact_match_p2g",
        ):
            assert isinstance(point[key], float), (key, point)
    for task in ("g2p", "p2g"):
        assert curve[-1][f"val_loss_{task}"] < 0.8 * curve[0][f"val_loss_{task}"], curve
    test = record["final"]["test"]
    assert {"wer_g2p", "wer_p2g", "per_p2g", "loss_g2p"} <= set(test)
    assert record["data"]["task"] == "multitask"
    info = record["multitask"]
    assert info["mixing"] == "temperature" and set(info["tasks"]) == {"g2p", "p2g"}
    assert sum(t["probability"] for t in info["tasks"].values()) == pytest.approx(1.0)
    assert record["time_to_target_by_task"]["g2p"]["step"] == 0
    assert record["time_to_target_by_task"]["p2g"] is None
    assert record["time_to_target"]["step"] == 0  # eval.target on the pooled validation


# ----------------------------------------------------------------------------------- the report


def test_report_compares_each_task_with_its_single_task_runs(tmp_path):
    from test_report import training_record

    from ray_t2t.ledger import write_record
    from ray_t2t.reporting import build_report

    folder = tmp_path / "synthetic"
    # single-task runs: g2p scratch reaches wer 0.5 at step 400 of 1000 in 1000 s (400 s), p2g at 500 (500 s)
    g2p = training_record("scratch_g2p", "scratch", 0, 1000.0, 400, 0.45)
    p2g = training_record("scratch_p2g", "scratch", 0, 1000.0, 500, 0.45)
    p2g["data"]["task"] = "p2g_cmudict"
    slow = training_record("lora_g2p", "scratch", 0, 1000.0, 2000, 0.6)  # never reaches it
    multi = training_record("multitask", "multitask", 0, 1500.0, 600, 0.4)
    multi["data"]["task"] = "multitask"
    for point in multi["learning_curve"]:  # g2p reaches 0.5 at step 300 (450 s), p2g at step 700 (1050 s)
        point["val_wer_g2p"] = 1.0 - 0.5 * point["step"] / 300
        point["val_wer_p2g"] = 1.0 - 0.5 * point["step"] / 700
    multi["final"]["test"] |= {"wer_g2p": 0.3, "wer_p2g": 0.5}
    target = {"metric": "wer", "op": "<=", "value": 0.5}
    multi["multitask"] = {
        "mixing": "proportional",
        "temperature": 2.0,
        "tasks": {
            "g2p": {"task": "g2p_cmudict", "prefix": "g2p: ", "probability": 0.6, "target": target},
            "p2g": {"task": "p2g_cmudict", "prefix": "p2g: ", "probability": 0.4, "target": target},
        },
    }
    alone = training_record("p2g_alone", "multitask", 0, 1000.0, 2000, 0.5)  # a one-task multitask entry
    alone["data"]["task"] = "multitask"
    alone["multitask"] = {
        "mixing": "proportional",
        "temperature": 2.0,
        "tasks": {"p2g": {"task": "p2g_cmudict", "prefix": "p2g: ", "probability": 1.0, "target": target}},
    }
    for point in alone["learning_curve"]:  # reaches wer 0.5 at step 350, between the evaluations at 300 and 400 (350 s)
        point["val_wer_p2g"] = 1.0 - 0.5 * point["step"] / 350
    alone["final"]["test"]["wer_p2g"] = 0.44
    for record in (g2p, p2g, slow, multi, alone):
        write_record(folder / "runs" / record["label"], record)
    report = build_report(folder, plots=False)
    rows = {(r["group"], r["task"]): r for r in report.data["multitask"]}
    assert rows[("multitask", "g2p")]["multitask"]["s"]["mean"] == pytest.approx(450)
    assert rows[("multitask", "g2p")]["best_single"]["group"] == "scratch_g2p"
    assert rows[("multitask", "g2p")]["best_single"]["s"]["mean"] == pytest.approx(400)
    assert [g["group"] for g in rows[("multitask", "g2p")]["single_groups"]] == ["lora_g2p", "scratch_g2p"]
    assert rows[("multitask", "p2g")]["multitask"]["s"]["mean"] == pytest.approx(1050)
    # the one-task multitask entry counts as a single-task run of p2g, and is faster than scratch_p2g
    assert [g["group"] for g in rows[("multitask", "p2g")]["single_groups"]] == ["p2g_alone", "scratch_p2g"]
    assert rows[("multitask", "p2g")]["best_single"]["group"] == "p2g_alone"
    assert rows[("multitask", "p2g")]["best_single"]["s"]["mean"] == pytest.approx(350)  # interpolated
    assert rows[("multitask", "p2g")]["best_single"]["test"]["mean"] == pytest.approx(0.44)
    assert ("p2g_alone", "p2g") not in rows  # one task: a baseline, not a multi-task group
    everything = rows[("multitask", "all tasks")]
    assert everything["s"]["mean"] == pytest.approx(1050) and everything["single_sum"]["s"] == pytest.approx(750)
    markdown = (folder / "report" / "report.md").read_text()
    assert "## Multi-task against single-task runs" in markdown
    assert (
        "| multitask | p2g (p2g_cmudict) | 0.4 | wer <= 0.5 | 1/1 | 1050 | 1.05 | 0.5 | p2g_alone (of 2) |" in markdown
    )
    assert "every task's target after 1050 s, single-task runs 750 s one after another" in report.summary
    # --target replaces every task's own: the multitask g2p curve crosses wer 0.75 at step 150 (225 s)
    relaxed = {
        (r["group"], r["task"]): r for r in build_report(folder, target="wer <= 0.75", plots=False).data["multitask"]
    }
    assert relaxed[("multitask", "g2p")]["target"] == "wer <= 0.75"
    assert relaxed[("multitask", "g2p")]["multitask"]["s"]["mean"] == pytest.approx(225)
