"""The method protocol: what a method declares (its parameters and traits) and the hooks the shared
loop calls, each with its default. A method file ends with one `Method(...)` naming what it
overrides; `ray_t2t.methods` registers it. docs/methods.md walks through adding one.

Everything else (the DeepSpeed engine, batching order, evaluation, checkpoints, the run record) is the
shared loop's job, in ray_t2t.training, so methods are compared on equal terms. Methods never import Ray.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ray_t2t.batching import family_collate
from ray_t2t.config.sections import MethodParams
from ray_t2t.errors import ConfigError
from ray_t2t.models import model_config

if TYPE_CHECKING:
    import torch

    from ray_t2t.config.experiment import ExperimentConfig
    from ray_t2t.config.sections import ModelSpec
    from ray_t2t.tokenizer import PairTokenizer

Family = Literal["encoder_decoder", "decoder_only"]
FAMILIES: tuple[Family, ...] = ("encoder_decoder", "decoder_only")
# How a method uses models.teacher (None: not at all). Every use charges the teacher's training to the
# method's runs in the report; "soft_targets" also charges the teacher inference that stored them.
TeacherUse = Literal["soft_targets", "live", "weights"]
Kind = Literal["normal", "distillation", "alternative"]


@dataclass
class Setup:
    """What a method needs to build its model and its batches, in a worker."""

    cfg: ExperimentConfig
    params: Any  # the method's entry in cfg.methods (its parameters model)
    tokenizer: PairTokenizer
    seed: int
    encoder_decoder: bool | None = None  # set by the loop once the model is built
    # What the launcher and the method's prepare() gave the workers: soft_targets (folders) and
    # stored_temperatures for methods that read stored teacher outputs, teacher (a path) for a live
    # teacher, and the method's own keys.
    extras: dict = field(default_factory=dict)

    def model_spec(self, role: str) -> ModelSpec:
        return model_spec(self.cfg, role)


def model_spec(cfg: ExperimentConfig, role: str) -> ModelSpec:
    """models.student / models.base / the (first) teacher."""
    if role == "teacher":
        return cfg.models.teachers[0]
    return getattr(cfg.models, role)


# ------------------------------------------------------------------------------ default hooks


def no_check(cfg: ExperimentConfig, params: Any) -> None:
    return None


def no_preparation(cfg: ExperimentConfig, params: Any, log: Callable[[str], None]) -> dict:
    return {}


def collate(
    setup: Setup,
    source_ids: list[list[int]],
    target_ids: list[list[int]],
    generator: torch.Generator | None = None,
    indices: list[int] | None = None,
) -> dict:
    """The family's standard batch (encoder-decoder or decoder-only, loss on the target). A method's
    own collate may draw random numbers from `generator` (None in training: the global torch RNG,
    which checkpoints restore; a fixed one in evaluation, so validation batches never change).
    `indices` are the examples' row numbers in the training split (None in evaluation)."""
    return family_collate(bool(setup.encoder_decoder), setup.tokenizer, source_ids, target_ids)


def cross_entropy(model: torch.nn.Module, batch: dict, setup: Setup | None = None) -> Any:
    return model(**batch).loss


def save_pretrained(model: torch.nn.Module, folder: Path, setup: Setup) -> None:
    model.save_pretrained(folder)


def every_row(setup: Setup, n_train: int) -> list[int] | None:
    return None


def always_trains(setup: Setup) -> bool:
    return True


def same_sources(setup: Setup, source_ids: list) -> list:
    return source_ids


def no_extra_flops(setup: Setup, engine: Any) -> tuple[float, float]:
    return 0.0, 0.0


def no_teacher(params: Any) -> TeacherUse | None:
    return None


# ---------------------------------------------------------------------------------- the protocol


@dataclass(frozen=True)
class Method:
    """One training method: its parameters model, its traits and its hooks. Only `name`, `params`
    and `build` are required; every other hook defaults to the plain behaviour named below."""

    name: str
    params: type[MethodParams]  # the config entry {name: <name>, ...}; its docstring is the one-line summary
    build: Callable[[Setup], Any]  # the model to train, with requires_grad set on exactly what trains

    # ---- traits
    kind: Kind = "normal"  # the report's verdict compares distillation against normal training
    # How it uses the teacher, from its parameters (kd_logits: stored or live by teacher_source).
    teacher_use: Callable[[Any], TeacherUse | None] = no_teacher
    all_teachers: bool = False  # learns from every teacher of models.teacher (else the first)
    families: tuple[Family, ...] = FAMILIES  # model families it can train (check_config refuses others)
    engine_precision: str | None = None  # fixes deepspeed.precision=auto (qlora: fp32, bitsandbytes' own)
    evaluates_task: bool = True  # False: validate on its own loss, nothing decoded (pretrain)
    makes_base: bool = False  # its exported model is models.base for the runs after it (pretrain)
    # The parameter that sets how many training examples it learns from (fewshot: k): the report
    # shows quality against it.
    examples_param: str | None = None
    # Its batches may be packed (training.packing): they are the family's decoder-only batch plus, in
    # position_keys, tensors flattened over the labelled positions (ray_t2t.batching.packing).
    packs: bool = False
    position_keys: tuple[str, ...] = ()

    # ---- hooks (driver)
    check: Callable[[ExperimentConfig, Any], None] = no_check  # raise ConfigError before any work
    # Driver-side work before training (after the launcher stored the teacher's outputs, when
    # teacher_use is "soft_targets"); the dict reaches the workers in setup.extras. Keys the loop reads:
    # data_path (train on this prepared folder instead of the experiment's), task_targets ({task:
    # target}: time to each task's target), record_fields (added to the run record).
    prepare: Callable[[ExperimentConfig, Any, Callable[[str], None]], dict] = no_preparation

    # ---- hooks (workers)
    collate: Callable[..., dict] = collate  # (setup, source_ids, target_ids, generator, indices) -> batch
    # loss(model, batch, setup) -> loss, or (loss, {name: scalar}): statistics the loop averages like the
    # loss and records as train_<name> (gan's train_disc_accuracy)
    loss: Callable[..., Any] = cross_entropy
    export: Callable[[Any, Any, Setup], None] = save_pretrained  # write the deployable model to a folder
    # batch_order(setup, data, lengths, batch_size, world_size, rank, seed, group_by_length) -> an object
    # with .indices(micro_step); None: the loop's BatchOrder (multitask: a MixtureOrder over its tasks)
    batch_order: Callable[..., Any] | None = None
    # The rows of the training split it learns from (None: all); the record's data.train_examples
    # counts them (fewshot's k examples).
    train_rows: Callable[[Setup, int], list[int] | None] = every_row
    # False: no optimizer steps; the run is charged its validation and test inference (fewshot in-context)
    trains: Callable[[Setup], bool] = always_trains
    # What the model reads for each source at evaluation and decoding (fewshot: demonstrations first)
    prompt_sources: Callable[[Setup, list], list] = same_sources
    # FLOPs per (source, target) token a step spends besides the trained model's (a live teacher's
    # forward passes); called once the engine is built
    extra_flops_per_token: Callable[[Setup, Any], tuple[float, float]] = no_extra_flops

    def uses_teacher(self, params: Any) -> bool:
        return self.teacher_use(params) is not None

    def check_config(self, cfg: ExperimentConfig, params: Any) -> None:
        """Everything checked before any work: the trained model's family against `families` and, with
        training.packing, the method's support for it (the model's config is read only for these), then
        the method's own check."""
        packing = cfg.training.packing
        if packing and not self.packs:
            raise ConfigError(
                f"training.packing: method {self.name!r} does not pack its batches; set training.packing: false "
                f"or leave {self.name!r} out (docs/training.md#packing lists the methods that pack)"
            )
        if set(self.families) != set(FAMILIES) or packing:
            role = getattr(params, "model", None) or "student"
            spec = model_spec(cfg, role)
            try:
                config = model_config(spec)
            except OSError as err:
                raise ConfigError(f"models.{role}: cannot read the config of {spec.name_or_path!r}: {err}") from None
            family = "encoder_decoder" if config.is_encoder_decoder else "decoder_only"
            if packing and family != "decoder_only":
                raise ConfigError(
                    f"training.packing: packing is for decoder-only models (GPT-2, Llama), but models.{role} "
                    f"is encoder-decoder ({config.model_type}); set training.packing: false"
                )
            if family not in self.families:
                index = next((i for i, entry in enumerate(cfg.methods) if entry is params), None)
                where = f"methods.{index}.model" if index is not None else f"{self.name}.model"
                wanted = " or ".join(f.replace("_", "-") for f in self.families)
                example = " (T5, BART)" if self.families == ("encoder_decoder",) else " (GPT-2, Llama)"
                raise ConfigError(
                    f"{where}: method {self.name!r} needs an {wanted} model{example}, but models.{role} is "
                    f"{family.replace('_', '-')} ({config.model_type})"
                )
        self.check(cfg, params)
