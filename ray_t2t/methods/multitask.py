"""multitask: one randomly initialized model trained on several tasks at once, T5-style.

    ray-t2t train configs/multitask_smoke.yaml method=multitask

    methods:
      - name: multitask
        tasks: [g2p_cmudict, p2g_cmudict, {task: num2words, split_sizes: {train: 5000}}]
        mixing: temperature          # proportional | temperature (p_i ∝ n_i^(1/T)) | fixed (each task's weight)
        temperature: 2

Data: prepare() (on the driver) builds one prepared dataset for the entry (ray_t2t.data.prepare_multitask):
each task loaded and split as its own data section would be (the experiment's `data` with the task's
options), every source behind the task's prefix ("g2p: "), the splits pooled with a `task` column and
one tokenizer built over all tasks (data.tokenizer; char levels where a task needs them). Its path
reaches the workers in the extras, and the loop trains and evaluates on it.

Training order: batch_order() returns a MixtureOrder: examples drawn by the mixture over the tasks'
training sizes (or weights), seeded and resumable like every batch order.

Evaluation: the loop scores each validation/test example and, since the split has a `task` column,
also per task: val_wer_g2p, val_loss_p2g, ... next to the pooled figures; each task's time to its
target (the task's `target`, else eval.target) lands in the record's time_to_target_by_task. The
record's `multitask` holds the tasks, their prefixes, sizes and mixture probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from ray_t2t.batching.order import MixtureOrder, mixture_probabilities
from ray_t2t.config.sections import (
    CmudictSource,
    FilesSource,
    HuggingFaceSource,
    MethodParams,
    ModelRole,
    Num2WordsSource,
    Section,
    SplitSizes,
    TargetSection,
)
from ray_t2t.data import multitask_task_data, prepare_multitask
from ray_t2t.methods.base import Method, Setup
from ray_t2t.methods.scratch import build as build_scratch

if TYPE_CHECKING:
    import torch

    from ray_t2t.config.experiment import ExperimentConfig
    from ray_t2t.data import PreparedData

TASK_SHORT_NAMES = {
    "g2p_cmudict": "g2p",
    "p2g_cmudict": "p2g",
    "num2words": "n2w",
    "huggingface": "hf",
    "files": "files",
}


class MultitaskTask(Section):
    """One task of a multitask entry. Unset options are taken from the `data` section."""

    task: Literal["g2p_cmudict", "p2g_cmudict", "num2words", "huggingface", "files"] = Field(
        description="The task (as data.task); a bare task name stands for {task: NAME}."
    )
    name: str = Field(
        None,
        pattern=r"^[a-z][a-z0-9_]*$",  # type: ignore[arg-type]  # filled from `task` when absent
        description="Short name: the suffix of the task's metrics (val_wer_g2p) and of its default prefix; "
        "default g2p, p2g, n2w, hf or files after the task.",
    )
    prefix: str = Field(
        None,  # type: ignore[arg-type]  # filled from `name` when absent
        description="T5-style task prefix put before every source of the task; default '<name>: '.",
    )
    weight: float | None = Field(
        None, ge=0, description="Sampling weight with mixing: fixed (normalized over the tasks); unused otherwise."
    )
    split_sizes: SplitSizes | None = Field(
        None, description="This task's split sizes; null = data.split_sizes. Split by data.split_seed."
    )
    target: TargetSection | None = Field(
        None,
        description="This task's quality target on its own validation examples, e.g. 'wer <= 0.5'; null = "
        "eval.target. Its time to target is in the run record and the report.",
    )
    cmudict: CmudictSource | None = Field(None, description="Options of g2p_cmudict/p2g_cmudict; null = data.cmudict.")
    num2words: Num2WordsSource | None = Field(None, description="Options of num2words; null = data.num2words.")
    files: FilesSource | None = Field(None, description="Source of a files task; null = data.files.")
    huggingface: HuggingFaceSource | None = Field(
        None, description="Source of a huggingface task; null = data.huggingface."
    )
    source_column: str | None = Field(None, description="Input column (files, huggingface); null = data.source_column.")
    target_column: str | None = Field(
        None, description="Output column (files, huggingface); null = data.target_column."
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"task": data}
        if isinstance(data, dict) and isinstance(data.get("task"), str):
            data = dict(data)
            if data.get("name") is None:
                data["name"] = TASK_SHORT_NAMES.get(data["task"], data["task"])
            if data.get("prefix") is None and isinstance(data["name"], str):
                data["prefix"] = f"{data['name']}: "
        return data


class MultitaskParams(MethodParams):
    """One model trained on several tasks at once, each source behind a T5-style task prefix ("g2p: ")."""

    name: Literal["multitask"] = Field(description="Method name.")
    model: ModelRole = Field("student", description="Which of `models` to build and train (randomly initialized).")
    tasks: list[MultitaskTask] = Field(
        min_length=1,
        description="The tasks, e.g. [g2p_cmudict, p2g_cmudict] or [{task: num2words, split_sizes: {train: 5000}}]. "
        "Their examples are prefixed, pooled in one prepared dataset with a shared tokenizer (data.tokenizer) "
        "and sampled by `mixing`.",
    )
    mixing: Literal["proportional", "temperature", "fixed"] = Field(
        "proportional",
        description="How training examples are drawn: proportional (p_i ∝ n_i, the tasks' training examples), "
        "temperature (p_i ∝ n_i^(1/T)), fixed (p_i ∝ each task's `weight`).",
    )
    temperature: float = Field(
        2.0, gt=0, description="T of mixing: temperature (1 = proportional; larger = closer to uniform)."
    )

    @model_validator(mode="after")
    def _tasks_consistent(self) -> MultitaskParams:
        names = [t.name for t in self.tasks]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"tasks: the name(s) {', '.join(repeated)} are used twice; give each task a distinct `name`"
            )
        prefixes = [t.prefix for t in self.tasks]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError("tasks: two tasks have the same `prefix`; the model could not tell them apart")
        weighted = [i for i, t in enumerate(self.tasks) if t.weight is not None]
        if self.mixing == "fixed":
            missing = [i for i, t in enumerate(self.tasks) if t.weight is None]
            if missing:
                raise ValueError(f"tasks.{missing[0]}.weight: mixing: fixed needs a weight on every task")
            if sum(t.weight for t in self.tasks) <= 0:
                raise ValueError("tasks.*.weight: the weights sum to 0; give at least one task a positive weight")
        elif weighted:
            raise ValueError(
                f"tasks.{weighted[0]}.weight: weights are used with mixing: fixed only (mixing is {self.mixing})"
            )
        return self


def check(cfg: ExperimentConfig, params: MethodParams) -> None:
    """ConfigError naming the key for a task its section cannot describe, or a shared tokenizer that
    cannot spell a task's text (data.tokenizer word level for spellings or numbers)."""

    multitask_task_data(cfg, params)


def probabilities(params: MethodParams, summary: dict) -> dict[str, float]:
    """The mixture over the tasks of a prepared multitask dataset (its summary's training sizes)."""

    sizes = {task.name: summary["tasks"][task.name]["examples"]["train"] for task in params.tasks}
    weights = {task.name: task.weight for task in params.tasks}
    return mixture_probabilities(sizes, params.mixing, params.temperature, weights)


def prepare(cfg: ExperimentConfig, params: MethodParams, log: Callable[[str], None]) -> dict:
    """Build (or reuse) the pooled dataset; the workers get its path, each task's target and what the
    run record says about the tasks."""

    check(cfg, params)
    data = prepare_multitask(cfg, params, log=log)
    mixture = probabilities(params, data.summary)
    default = cfg.eval.target.model_dump() if cfg.eval.target else None
    targets = {task.name: task.target.model_dump() if task.target else default for task in params.tasks}
    tasks = {
        task.name: {
            "task": task.task,
            "prefix": task.prefix,
            "probability": mixture[task.name],
            "examples": data.summary["tasks"][task.name]["examples"],
            "target": targets[task.name],
        }
        for task in params.tasks
    }
    shown = ", ".join(f"{name} {p:.3f}" for name, p in mixture.items())
    log(f"multitask data: {data.path} ({'reused' if data.reused else 'built'}); {params.mixing} mixture: {shown}")
    return {
        "data_path": str(data.path.resolve()),
        "task_targets": targets,
        "record_fields": {"multitask": {"mixing": params.mixing, "temperature": params.temperature, "tasks": tasks}},
    }


def build(setup: Setup) -> torch.nn.Module:

    return build_scratch(setup)


def batch_order(
    setup: Setup,
    data: PreparedData,
    lengths: list,
    batch_size: int,
    world_size: int,
    rank: int,
    seed: int,
    group_by_length: bool,
) -> Any:
    """Training batches drawn by the task mixture (ray_t2t.batching.order.MixtureOrder)."""

    tasks = data.read_split("train").column("task").to_pylist()
    return MixtureOrder(
        tasks, probabilities(setup.params, data.summary), lengths, batch_size, world_size, rank, seed, group_by_length
    )


METHOD = Method(
    "multitask", MultitaskParams, build, kind="alternative", check=check, prepare=prepare, batch_order=batch_order
)
