"""Training methods: one module each, looked up by name in METHODS.

A method module defines

    build(setup: Setup) -> torch.nn.Module
        The model to train, with requires_grad set on exactly what trains.

and may define

    check(cfg, params) -> None                                  raises ConfigError before any work
    prepare(cfg, params, log) -> dict    driver-side work before training (e.g. soft targets); the
                                         dict reaches the workers as setup.extras. Keys the loop reads:
                                         data_path (train on this prepared folder instead of the
                                         experiment's), task_targets ({task: target dict}: time to
                                         each task's target), record_fields (added to the run record)
    batch_order(setup, data, lengths, batch_size, world_size, rank, seed, group_by_length)
                                         an object with .indices(micro_step) (default: BatchOrder;
                                         multitask: a MixtureOrder over its tasks)
    collate(setup, source_ids, target_ids, generator) -> dict   (default: the family's collation)
    loss(model, batch, setup) -> torch.Tensor                   (default: the model's cross-entropy)
        or (loss, {name: scalar}): statistics the loop averages like the loss and records as
        train_<name> in the log lines and the learning curve (e.g. gan's train_disc_accuracy)
    export(model, folder, setup) -> None                        (default: save_pretrained)
    EVALUATES_TASK = False     (default True: decode and score; False: validate on the method's own loss)
    train_rows(setup, n_train) -> list[int]     the rows of the training split it learns from (default:
                                         all); training reads only these (SubsetOrder), and the record's
                                         data.train_examples counts them (fewshot's k examples)
    trains(setup) -> bool        (default True) False: no optimizer steps; the run is charged its
                                         validation and test inference instead (fewshot in-context)
    prompt_sources(setup, source_ids) -> list   what the model reads for each source at evaluation and
                                         decoding (default: the sources; fewshot: demonstrations first)
    extra_flops_per_token(setup, engine) -> (source, target)   FLOPs per token a step spends besides
                                         the trained model's, added to the record's (a live teacher's
                                         forward passes); called once the engine is built

Everything else (the DeepSpeed engine, batching order, evaluation, checkpoints, the run record) is the
shared loop's job, in ray_t2t.train, so methods are compared on equal terms. Methods never import Ray.
Names map to modules of this package only: nothing named in a config is ever imported.

Methods that run a live teacher in the workers (kd_logits online, kd_hidden, kd_attention,
kd_relational) share ray_t2t.methods.distill: the teacher resolved in prepare() and loaded once per
worker, frozen and outside the DeepSpeed engine; layer maps; hidden states and attention maps.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray_t2t.config import ExperimentConfig, ModelSpec
    from ray_t2t.tokenizer import PairTokenizer

METHODS = {
    "scratch": "ray_t2t.methods.scratch",
    "finetune": "ray_t2t.methods.finetune",
    "lora": "ray_t2t.methods.lora",
    "partial": "ray_t2t.methods.partial",
    "qlora": "ray_t2t.methods.qlora",
    "pretrain": "ray_t2t.methods.pretrain",
    "sft": "ray_t2t.methods.sft",
    "kd_logits": "ray_t2t.methods.kd_logits",
    "kd_sequence": "ray_t2t.methods.kd_sequence",
    "kd_hidden": "ray_t2t.methods.kd_hidden",
    "kd_attention": "ray_t2t.methods.kd_attention",
    "kd_relational": "ray_t2t.methods.kd_relational",
    "kd_multi_teacher": "ray_t2t.methods.kd_multi_teacher",
    "gan": "ray_t2t.methods.gan",
    "vae": "ray_t2t.methods.vae",
    "fewshot": "ray_t2t.methods.fewshot",
    "multitask": "ray_t2t.methods.multitask",
}


@dataclass
class Setup:
    """What a method needs to build its model."""

    cfg: ExperimentConfig
    params: Any  # the method's entry in cfg.methods (its parameters)
    tokenizer: PairTokenizer
    seed: int
    encoder_decoder: bool | None = None  # set by the loop once the model is built
    extras: dict = field(default_factory=dict)  # what the method's prepare() returned in the driver

    def model_spec(self, role: str) -> ModelSpec:
        return model_spec(self.cfg, role)


def model_spec(cfg: ExperimentConfig, role: str) -> ModelSpec:
    """models.student / models.base / the (first) teacher."""
    if role == "teacher":
        return cfg.models.teachers[0]
    return getattr(cfg.models, role)


def get_method(name: str) -> ModuleType:
    """The module implementing method `name`. Raises KeyError naming the methods there are."""
    if name not in METHODS:
        raise KeyError(f"method {name!r} is not implemented yet. Implemented: {', '.join(METHODS)}")
    return importlib.import_module(METHODS[name])


def collate(setup: Setup, source_ids, target_ids, generator=None, indices=None) -> dict:
    """The family's standard batch (encoder-decoder or decoder-only, loss on the target). A method's
    own collate may draw random numbers from `generator` (None in training: the global torch RNG,
    which checkpoints restore; a fixed one in evaluation, so validation batches never change).
    `indices` are the examples' row numbers in the training split (None in evaluation)."""
    from ray_t2t.batching import collate_decoder_only, collate_encoder_decoder

    tok = setup.tokenizer
    if setup.encoder_decoder:
        return collate_encoder_decoder(source_ids, target_ids, tok.pad_id)
    return collate_decoder_only(source_ids, target_ids, tok.pad_id, tok.sep_id)


def cross_entropy(model, batch, setup: Setup | None = None) -> Any:
    return model(**batch).loss


def save_pretrained(model, folder, setup: Setup) -> None:
    model.save_pretrained(folder)
