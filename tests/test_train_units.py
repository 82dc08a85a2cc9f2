"""Ray-free pieces of training: batch order, schedule, DeepSpeed config, run identity, ledger math."""

from __future__ import annotations

import pytest
import torch

from ray_t2t.batching.order import BatchOrder, length_keys
from ray_t2t.config.experiment import choose_method, validate_config
from ray_t2t.errors import ConfigError
from ray_t2t.ledger import EnergyMeter, Hardware, cost_of, hardware_of, mfu, read_record, write_record
from ray_t2t.methods import METHODS, get_method
from ray_t2t.training.launcher import entry_config, run_hash
from ray_t2t.training.loop import deepspeed_config, lr_factor

from conftest import minimal_config

LENGTHS = [(i * 7919) % 23 + 2 for i in range(1000)]


def test_batch_order_is_deterministic_and_resumable():
    order = BatchOrder(LENGTHS, batch_size=16, seed=3)
    first = [order.indices(i) for i in range(200)]
    resumed = BatchOrder(LENGTHS, batch_size=16, seed=3)
    assert [resumed.indices(i) for i in range(120, 200)] == first[120:]  # position = step, nothing else
    assert BatchOrder(LENGTHS, batch_size=16, seed=4).indices(0) != first[0]


def test_each_epoch_covers_the_data_once_and_ranks_are_disjoint():
    ranks = [BatchOrder(LENGTHS, batch_size=10, world_size=2, rank=r, seed=0) for r in range(2)]
    assert ranks[0].batches_per_epoch == 50
    seen = [i for step in range(50) for rank in ranks for i in rank.indices(step)]
    assert sorted(seen) == list(range(1000))
    second_epoch = [i for step in range(50, 100) for i in ranks[0].indices(step)]
    assert second_epoch != [i for step in range(50) for i in ranks[0].indices(step)]


def padding_share(order: BatchOrder, steps: int) -> float:
    padded = real = 0
    for step in range(steps):
        lengths = [LENGTHS[i] for i in order.indices(step)]
        padded += max(lengths) * len(lengths)
        real += sum(lengths)
    return 1 - real / padded


def test_length_grouping_cuts_padding():
    grouped = padding_share(BatchOrder(LENGTHS, 16, group_by_length=True), 60)
    plain = padding_share(BatchOrder(LENGTHS, 16, group_by_length=False), 60)
    assert grouped < plain / 3


def test_encoder_decoder_batches_group_by_source_then_target_length():
    """Sources and targets are padded apart, so grouping by the pair pads less than by their sum;
    a decoder-only model pads one sequence and groups by the sum."""
    sources = [(i * 7919) % 23 + 2 for i in range(4096)]
    targets = [s + (i * 104729) % 5 - 2 for i, s in enumerate(sources)]  # correlated with the source

    def pad_share(keys) -> float:
        order, padded, real = BatchOrder(keys, 32, seed=0), 0, 0
        for step in range(order.batches_per_epoch):
            batch = order.indices(step)
            for lengths in ([sources[i] for i in batch], [targets[i] for i in batch]):
                padded += max(lengths) * len(lengths)
                real += sum(lengths)
        return 1 - real / padded

    pairs = length_keys(sources, targets, encoder_decoder=True)
    assert pairs[:2] == [(sources[0], targets[0]), (sources[1], targets[1])]
    assert length_keys(sources, targets, encoder_decoder=False)[:2] == [
        sources[0] + targets[0],
        sources[1] + targets[1],
    ]
    by_pair, by_sum = pad_share(pairs), pad_share([s + t for s, t in zip(sources, targets)])
    assert by_pair < 0.75 * by_sum, (by_pair, by_sum)  # 4.6% vs 6.6% here; 5.4% vs 13.8% on the quickstart split


def test_too_few_examples_for_one_batch():
    with pytest.raises(ValueError, match="10 training examples cannot fill one batch of 8 x 2 workers"):
        BatchOrder([1] * 10, batch_size=8, world_size=2)


def cfg_with(tmp_path, **sections):
    return validate_config(minimal_config(tmp_path, **sections))


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
def test_learning_rate_schedule(tmp_path, schedule):
    cfg = cfg_with(tmp_path, training={"max_steps": 100, "warmup_steps": 10, "lr_schedule": schedule})
    factors = [lr_factor(step, cfg) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[:10] == sorted(factors[:10])
    if schedule == "constant":
        assert set(factors[10:]) == {1.0}
    else:
        assert factors[10:] == sorted(factors[10:], reverse=True) and factors[-1] < 0.05


def test_deepspeed_config_follows_the_config(tmp_path):
    cfg = cfg_with(
        tmp_path,
        training={"batch_size": 8},
        deepspeed={
            "zero_stage": 3,
            "offload_params": True,
            "offload_optimizer": True,
            "gradient_accumulation_steps": 4,
            "gradient_clipping": 0.5,
        },
    )
    ds = deepspeed_config(cfg, world_size=2)
    assert ds["train_batch_size"] == 8 * 4 * 2 and ds["train_micro_batch_size_per_gpu"] == 8
    assert ds["zero_optimization"] == {
        "stage": 3,
        "offload_optimizer": {"device": "cpu"},
        "offload_param": {"device": "cpu"},
    }
    assert ds["gradient_clipping"] == 0.5 and not ds["bf16"]["enabled"]  # CPU: fp32
    gpu = cfg_with(tmp_path, scaling={"use_gpu": True}, deepspeed={"gradient_clipping": 0})
    ds = deepspeed_config(gpu, world_size=1)
    assert ds["bf16"]["enabled"] and "gradient_clipping" not in ds


def test_choose_method_and_run_identity(tmp_path):
    cfg = cfg_with(tmp_path, methods=[{"name": "scratch"}, {"name": "scratch", "label": "wide"}])
    assert choose_method(cfg, "wide").label == "wide"
    with pytest.raises(ConfigError, match="several methods; choose one with method=NAME \\(scratch, wide\\)"):
        choose_method(cfg, None)
    with pytest.raises(ConfigError, match="no method 'lora'"):
        choose_method(cfg, "lora")
    same = cfg_with(
        tmp_path, methods=[{"name": "scratch"}, {"name": "scratch", "label": "wide"}], report={"plots": False}
    )
    assert run_hash(cfg, cfg.methods[0]) == run_hash(same, same.methods[0])  # report settings do not matter
    assert run_hash(cfg, cfg.methods[0]) != run_hash(cfg, cfg.methods[1])
    other = cfg_with(tmp_path, methods=[{"name": "scratch"}], training={"max_steps": 7})
    assert run_hash(cfg, cfg.methods[0]) != run_hash(other, other.methods[0])
    longer = cfg_with(
        tmp_path,
        methods=[{"name": "scratch"}, {"name": "scratch", "label": "long", "max_steps": 9}],
        training={"max_steps": 7},
    )
    assert entry_config(longer, longer.methods[1]).training.max_steps == 9  # an entry's own step budget
    assert entry_config(longer, longer.methods[0]) is longer


def test_every_registered_method_imports_and_builds_lazily():
    import typing

    from ray_t2t.config.experiment import method_entry_type

    for name in METHODS:
        assert callable(get_method(name).build)
    # every method the config accepts is implemented (all are now); any other name is refused
    entries = typing.get_args(typing.get_args(method_entry_type())[0])
    accepted = {typing.get_args(entry.model_fields["name"].annotation)[0] for entry in entries}
    assert accepted == set(METHODS)
    with pytest.raises(KeyError, match="not implemented yet"):
        get_method("kd_no_such_method")


def test_hardware_cost_and_mfu(tmp_path):
    cfg = cfg_with(tmp_path, scaling={"num_workers": 2, "resources_per_worker": {"CPU": 3}}, cost={"cpu_hour": 0.1})
    hw = hardware_of(cfg)
    assert (hw.device_type, hw.devices) == ("cpu", 6)
    assert cost_of(3600 * 6, hw, cfg) == pytest.approx(0.6)
    assert mfu(1e12, hw) is None
    gpu = cfg_with(tmp_path, scaling={"use_gpu": True}, cost={"device_hour": {"H100": 2.0}})
    hw = hardware_of(gpu, "NVIDIA H100 80GB HBM3")
    assert hw.device_type == "H100" and hw.price_per_device_hour(gpu) == 2.0
    assert mfu(989e12 * 0.4, hw) == pytest.approx(0.4)
    with pytest.raises(ConfigError, match="cost.device_hour has no price for 'A100'"):
        Hardware(1, "A100", 1).price_per_device_hour(gpu)


def test_energy_meter_is_off_on_cpu():
    meter = EnergyMeter(torch.device("cpu"))
    meter.resume()
    meter.pause()
    assert not meter.available and meter.take() == 0.0


def test_record_write_is_atomic_and_readable(tmp_path):
    assert read_record(tmp_path) is None
    write_record(tmp_path / "run", {"status": "finished", "x": [1, 2]})
    assert read_record(tmp_path / "run") == {"status": "finished", "x": [1, 2]}
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["record.json"]


def test_a_record_names_the_trained_weights_a_run_starts_from(tmp_path):
    """What the report charges a fine-tune for: the model its role loads (None for a random start)."""
    from ray_t2t.methods import Setup
    from ray_t2t.training.loop import initialized_from

    base = str(tmp_path / "runs" / "test" / "runs" / "pretrain" / "model")
    cfg = cfg_with(
        tmp_path,
        models={"student": {"preset": "t5-tiny"}, "base": {"name_or_path": base}},
        methods=[{"name": "finetune"}, {"name": "scratch"}, {"name": "lora", "label": "arch_only", "model": "student"}],
    )
    finetune, scratch, student = cfg.methods
    assert initialized_from(Setup(cfg, finetune, None, seed=0)) == base
    assert initialized_from(Setup(cfg, scratch, None, seed=0)) is None
    assert initialized_from(Setup(cfg, student, None, seed=0)) is None
    raw = cfg.model_dump(mode="json")
    raw["models"]["base"] = {"name_or_path": base, "pretrained": False}  # the architecture only
    cfg = validate_config(raw)
    assert initialized_from(Setup(cfg, cfg.methods[0], None, seed=0)) is None


def test_local_mode_on_a_gpu_refuses_a_process_without_one(tmp_path):
    """scaling.local_mode trains in the calling process: with use_gpu and no GPU there (a head node),
    the run is refused before Ray starts or any folder is written."""
    from ray_t2t.errors import UserError
    from ray_t2t.training.launcher import train

    raw = minimal_config(tmp_path, methods=[{"name": "scratch"}], scaling={"use_gpu": True, "local_mode": True})
    with pytest.raises(UserError, match="local_mode trains in this process, which sees no CUDA GPU"):
        train(validate_config(raw), "scratch")
    assert not (tmp_path / "runs").exists()
