"""The experiment config: strict keys, types, ranges, overrides, cross-field checks, safe YAML."""

from pathlib import Path

import pytest
import yaml

from ray_t2t.config.experiment import ExperimentConfig, config_hash, load_config, validate_config
from ray_t2t.config.explain import describe_fields, explain
from ray_t2t.config.overrides import apply_override
from ray_t2t.config.sections import DataSection
from ray_t2t.errors import ConfigError

from conftest import REPO, minimal_config

SHIPPED = sorted((REPO / "configs").glob("*.yaml")) + sorted((REPO / "examples").glob("*.yaml"))


def write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_validates_and_says_how_to_run_it(path):
    cfg = load_config(path)
    assert isinstance(cfg, ExperimentConfig)
    assert path.read_text().startswith("# ray-t2t "), "a shipped config opens with the command that runs it"


def test_shipped_configs_exist():
    names = {p.name for p in SHIPPED}
    assert {"quickstart.yaml", "quickstart_smoke.yaml"} <= names


def test_minimal_config_fills_documented_defaults(tmp_path):
    cfg = validate_config(minimal_config(tmp_path))
    assert cfg.data.task == "g2p_cmudict"
    assert cfg.data.cmudict.strip_stress is True
    assert cfg.deepspeed.zero_stage == 0
    assert cfg.experiment_dir == tmp_path / "runs" / "test"


def test_unknown_key_names_key_section_and_valid_keys(tmp_path):
    raw = minimal_config(tmp_path)
    raw["data"]["no_such_key"] = 1
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    message = str(err.value)
    assert "section 'data'" in message and "'no_such_key'" in message
    for key in DataSection.model_fields:
        assert key in message


def test_unknown_top_level_and_nested_keys(tmp_path):
    raw = minimal_config(tmp_path, trainig={"x": 1})
    raw["data"]["tokenizer"] = {"levle": "char"}
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    message = str(err.value)
    assert "top level: unknown key 'trainig'" in message
    assert "section 'data.tokenizer': unknown key 'levle'" in message and "source_level" in message
    assert "2 problem(s)" in message


@pytest.mark.parametrize(
    "override, field",
    [
        ("training.learning_rate=fast", "training.learning_rate"),
        ("training.max_steps=0", "training.max_steps"),
        ("deepspeed.zero_stage=4", "deepspeed.zero_stage"),
        ("data.task=nope", "data.task"),
        ("scaling.num_workers=[1]", "scaling.num_workers"),
        ("run.name=has space", "run.name"),
        ("models.student.preset=t5-huge", "models.student"),
        ("eval.metric=accuracy", "eval.metric"),
    ],
)
def test_wrong_types_and_ranges_name_the_field(tmp_path, override, field):
    path = write(tmp_path, minimal_config(tmp_path))
    with pytest.raises(ConfigError) as err:
        load_config(path, [override])
    assert f"\n  {field}" in str(err.value)


def test_overrides_are_typed_and_nested(tmp_path):
    raw = minimal_config(tmp_path, methods=[{"name": "scratch"}, {"name": "lora", "model": "student"}])
    path = write(tmp_path, raw)
    cfg = load_config(
        path,
        [
            "training.learning_rate=3e-4",
            "training.group_by_length=false",
            "data.split_sizes.train=50",
            "methods.1.rank=16",
            "methods.1.target_modules=[q, v]",
            "scaling.resources_per_worker={CPU: 2}",
            "eval.target=per <= 0.2",
        ],
    )
    assert cfg.training.learning_rate == 3e-4 and cfg.training.group_by_length is False
    assert cfg.data.split_sizes.train == 50
    assert cfg.methods[1].rank == 16 and cfg.methods[1].target_modules == ["q", "v"]
    assert cfg.scaling.resources_per_worker == {"CPU": 2.0}
    assert (cfg.eval.target.metric, cfg.eval.target.op, cfg.eval.target.value) == ("per", "<=", 0.2)


def test_override_of_unknown_key_is_rejected_like_the_file(tmp_path):
    path = write(tmp_path, minimal_config(tmp_path))
    with pytest.raises(ConfigError, match=r"section 'deepspeed': unknown key 'stage'. Valid keys: zero_stage"):
        load_config(path, ["deepspeed.stage=2"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.max_steps", "not of the form section.key=value"),
        ("=3", "not of the form"),
        ("methods.5.rank=3", "not an index of a list of 1"),
        ("training.max_steps.x=3", "training.max_steps is a value, not a section"),
    ],
)
def test_malformed_overrides(tmp_path, override, message):
    raw = minimal_config(tmp_path, methods=[{"name": "scratch"}], training={"max_steps": 5})
    with pytest.raises(ConfigError, match=message):
        apply_override(raw, override)


def test_method_names_and_their_parameters_are_checked(tmp_path):
    raw = minimal_config(tmp_path, methods=[{"name": "distill_magic"}])
    with pytest.raises(ConfigError, match="does not match any of the expected tags: 'scratch'"):
        validate_config(raw)
    raw = minimal_config(tmp_path, methods=[{"name": "lora", "model": "student", "rnak": 4}])
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'rnak'. Valid keys: label, max_steps, learning_rate, resources_per_worker, name, model, "
        r"rank",
    ):
        validate_config(raw)


@pytest.mark.parametrize(
    "sections, message",
    [
        ({"deepspeed": {"zero_stage": 2, "offload_params": True}}, "offload_params needs deepspeed.zero_stage=3"),
        ({"deepspeed": {"zero_stage": 0, "offload_optimizer": True}}, "offload_optimizer needs"),
        ({"deepspeed": {"precision": "bf16"}}, "needs scaling.use_gpu=true"),
        ({"methods": [{"name": "scratch"}, {"name": "scratch"}]}, "scratch listed twice"),
        ({"methods": [{"name": "kd_logits"}]}, "'kd_logits' needs models.teacher"),
        ({"methods": [{"name": "finetune"}]}, "trains models.base, which is not set"),
        ({"eval": {"target": "wer >= 0.5"}}, "wer is lower-is-better: use <="),
        ({"eval": {"target": "bleu > 20"}}, "not of the form"),
        ({"data": {"task": "files"}}, "task 'files' needs data.files"),
        ({"models": {"student": {"preset": "t5-tiny", "name_or_path": "t5-small"}}}, "exactly one of"),
    ],
)
def test_cross_field_checks(tmp_path, sections, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(minimal_config(tmp_path, **sections))


def test_teacher_may_be_one_or_several(tmp_path):
    one = validate_config(
        minimal_config(tmp_path, models={"student": {"preset": "t5-tiny"}, "teacher": {"preset": "t5-2m"}})
    )
    assert [t.preset for t in one.models.teachers] == ["t5-2m"]
    many = {"student": {"preset": "t5-tiny"}, "teacher": [{"preset": "t5-2m"}, {"preset": "gpt2-2m"}]}
    assert len(validate_config(minimal_config(tmp_path, models=many)).models.teachers) == 2


def test_yaml_is_loaded_safely_and_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"run: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    assert not marker.exists()


def test_file_level_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("run: {name: x\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match=r"\n  run: Field required"):
        load_config(tmp_path / "empty.yaml")


def test_every_field_is_documented_and_explained(tmp_path):
    rows = describe_fields(ExperimentConfig)
    undocumented = [path for path, _, _, description in rows if not description.strip()]
    assert undocumented == []
    paths = {row[0] for row in rows}
    assert {"data.cmudict.strip_stress", "deepspeed.zero_stage", "methods[name=lora].rank", "cost.device_hour"} <= paths
    cfg = validate_config(minimal_config(tmp_path))
    text = explain(cfg, "deepspeed")
    assert "deepspeed.zero_stage  (int, default 0)  = 0" in text and "data." not in text
    with pytest.raises(ConfigError, match="no config section 'nope'"):
        explain(None, "nope")


def test_config_hash_is_stable_and_sensitive(tmp_path):
    path = write(tmp_path, minimal_config(tmp_path))
    assert config_hash(load_config(path)) == config_hash(load_config(path))
    assert config_hash(load_config(path)) != config_hash(load_config(path, ["seed=1"]))
