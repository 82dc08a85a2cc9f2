"""fewshot: learning from exactly k training examples: fine-tuned on them, or shown them in context.

    ray-t2t train CONFIG method=fewshot methods.0.k=64                   # fine-tune on 64 examples
    ray-t2t train CONFIG method=fewshot methods.0.mode=in_context        # no training: k demonstrations
    tune: {methods: [fewshot], space: {fewshot: {k: [8, 64, 512]}}}      # quality against k (ray-t2t sweep)

Parameters: `model` (default base), `k`, `mode` (train or in_context).

The k examples are the first k rows of a seeded permutation of the training split (seed: the config's
`seed`), so the choice depends on nothing else (not on batch size, workers or training order), and the
rows for a smaller k are among those for a larger one: quality against k compares growing sets, not
fresh draws. Another seed (a sweep's `tune.seeds`) draws another set.

mode train: the shared loop trains on those rows only (`train_rows`; ray_t2t.batching.order.SubsetOrder):
the usual schedule (training.max_steps, warmup, decay), epochs repeating the k rows, micro-batches of
at most k / workers rows. Starting from a pretrained model (`models.base.name_or_path`) is the point; a
preset starts from a random initialization (few-shot from scratch: a floor, and what the tests use).

mode in_context (decoder-only models: GPT-2, Llama): no training. Every validation and test query is
prompted with the k demonstrations, each written as the model reads a training example, then the query:

    src_1 <sep> tgt_1 </s> src_2 <sep> tgt_2 </s> ... src_k <sep> tgt_k </s> query <sep>  -> target </s>

The run has zero training steps and time (`trains` is False); it is charged its inference instead:
the validation evaluation (the learning curve's one point, step 0) and the test evaluation make its
device-seconds and cost (record["cost_basis"] == "inference"). Encoder-decoder models, and prompts
longer than the model's positions, are refused before any work (ConfigError).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ray_t2t.batching import decoder_only_prompt
from ray_t2t.config.sections import MethodParams, ModelRole
from ray_t2t.data import Split, prepare_data
from ray_t2t.errors import ConfigError
from ray_t2t.methods.base import Method, Setup, model_spec, save_pretrained
from ray_t2t.models import build_model, model_config

if TYPE_CHECKING:
    import torch

    from ray_t2t.config.experiment import ExperimentConfig
    from ray_t2t.storage import StoragePath


class FewshotParams(MethodParams):
    """Few-shot: fine-tune on exactly k training examples, or prompt a decoder-only model with k demonstrations."""

    name: Literal["fewshot"] = Field(description="Method name.")
    model: ModelRole = Field(
        "base",
        description="Which of `models` to start from: a pretrained model (name_or_path) is the point; a "
        "preset starts from a random initialization.",
    )
    k: int = Field(
        64,
        ge=1,
        le=10_000_000,
        description="Training examples used: the first k of a permutation of the training split seeded by the "
        "config's seed (independent of batch size and order; a smaller k's rows are among a larger k's).",
    )
    mode: Literal["train", "in_context"] = Field(
        "train",
        description="train = fine-tune on the k examples with the usual schedule (epochs repeat them); in_context "
        "= no training: a decoder-only model reads the k demonstrations 'source <sep> target </s>' before each "
        "query, and the run is charged its validation and test inference.",
    )


DEMONSTRATIONS_FILE = "fewshot_demonstrations.json"  # written next to an in-context run's exported model


def _key(cfg: ExperimentConfig, params: MethodParams, field: str) -> str:
    for index, entry in enumerate(cfg.methods):
        if entry is params or (entry.label or entry.name) == (params.label or params.name):
            return f"methods.{index}.{field}"
    return f"{params.label or params.name}.{field}"


def select_rows(n_train: int, k: int, seed: int) -> list[int]:
    """The k training rows (sorted): the first k of a permutation of range(n_train) seeded by `seed`
    alone, so a smaller k's rows are among a larger k's. Raises ValueError when k > n_train."""
    if not 1 <= k <= n_train:
        raise ValueError(f"k = {k} training examples asked for, the training split has {n_train}")
    rows = list(range(n_train))
    random.Random(f"fewshot:{seed}").shuffle(rows)
    return sorted(rows[:k])


def demonstration_order(rows: list[int], seed: int) -> list[int]:
    """The rows in the order the in-context prompt shows them (seeded, not sorted by row number)."""
    order = list(rows)
    random.Random(f"fewshot-order:{seed}").shuffle(order)
    return order


def demonstration_prefix(demonstrations: list, sep_id: int) -> list[int]:
    """The token ids of k demonstrations, each `source <sep> target </s>` (a source and target as
    PairTokenizer encodes them, each ending in end-of-sequence) as a decoder-only model reads a
    training example (ray_t2t.batching.collate_decoder_only)."""
    prefix: list[int] = []
    for source, target in demonstrations:
        prefix += decoder_only_prompt(source, sep_id) + [int(i) for i in target]
    return prefix


# ------------------------------------------------------------------------------ the method hooks


def check(cfg: ExperimentConfig, params: MethodParams) -> None:
    """Before any work: in_context needs a decoder-only model; k must fit the workers and the split."""
    role = params.model
    spec = model_spec(cfg, role)
    if params.mode == "in_context":
        try:
            config = model_config(spec)
        except OSError as err:
            raise ConfigError(f"models.{role}: cannot read the config of {spec.name_or_path!r}: {err}") from None
        if config.is_encoder_decoder:
            raise ConfigError(
                f"{_key(cfg, params, 'mode')}: in_context prompts a decoder-only model with k demonstrations, but "
                f"models.{role} is {config.model_type} (encoder-decoder); use mode: train, or a decoder-only "
                f"models.{role} (GPT-2, Llama)"
            )
    elif params.k < cfg.scaling.num_workers:
        raise ConfigError(
            f"{_key(cfg, params, 'k')}: {params.k} training examples cannot give each of "
            f"scaling.num_workers={cfg.scaling.num_workers} workers one; raise k or lower the workers"
        )
    if cfg.data.split_sizes.train is not None and params.k > cfg.data.split_sizes.train:
        raise ConfigError(
            f"{_key(cfg, params, 'k')}: {params.k} is more than the training split's "
            f"{cfg.data.split_sizes.train} examples (data.split_sizes.train)"
        )


def prepare(cfg: ExperimentConfig, params: MethodParams, log: Callable[[str], None]) -> dict:
    """Driver side: check k against the prepared training split; for in_context, the demonstrations
    (rows, in prompt order, and their token ids) and a check that prompts fit the model's positions."""

    prepared = prepare_data(cfg, log=log)  # the launcher prepared it already: this reads the cache
    splits = prepared.summary["splits"]
    n_train = splits["train"]["examples"]
    if params.k > n_train:
        raise ConfigError(f"{_key(cfg, params, 'k')}: {params.k} is more than the training split's {n_train} examples")
    if params.mode != "in_context":
        return {}
    rows = demonstration_order(select_rows(n_train, params.k, cfg.seed), cfg.seed)
    train = Split(prepared, "train")
    tokenizer = prepared.tokenizer()
    prefix = demonstration_prefix([(train.source_ids[i], train.target_ids[i]) for i in rows], tokenizer.sep_id)
    _check_positions(cfg, params, len(prefix), max(splits[s]["max_source_tokens"] for s in ("validation", "test")))
    log(
        f"{params.label or params.name}: in-context, {params.k} demonstrations ({len(prefix)} tokens) before each query"
    )
    return {"demonstrations": {"rows": rows, "prefix": prefix}}


def _check_positions(cfg: ExperimentConfig, params: MethodParams, prefix_tokens: int, longest_source: int) -> None:

    config = model_config(model_spec(cfg, params.model))
    positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    decoded = cfg.eval.max_new_tokens or cfg.data.max_target_length
    needed = prefix_tokens + longest_source + decoded  # the query's source without eos, plus <sep>
    if positions and needed > positions:
        raise ConfigError(
            f"{_key(cfg, params, 'k')}: {params.k} demonstrations take {prefix_tokens} tokens; with the longest "
            f"query ({longest_source}) and decoding ({decoded}) a prompt needs {needed} positions, and "
            f"models.{params.model} has {positions}; lower k"
        )


def build(setup: Setup) -> torch.nn.Module:
    model, _ = build_model(setup.model_spec(setup.params.model), setup.tokenizer, seed=setup.seed)
    return model


def trains(setup: Setup) -> bool:
    return setup.params.mode != "in_context"


def train_rows(setup: Setup, n_train: int) -> list[int]:
    """The k rows of the training split this run learns from (trained on, or shown in context)."""
    return select_rows(n_train, setup.params.k, setup.seed)


def prompt_sources(setup: Setup, source_ids: list[list[int]]) -> list:
    """What the model reads for each source at evaluation and decoding: in context, the demonstrations
    first (decoder_only_prompt then turns `prefix + source` into `prefix + source <sep>`)."""
    if setup.params.mode != "in_context":
        return source_ids
    prefix = list(setup.extras["demonstrations"]["prefix"])
    return [prefix + list(source) for source in source_ids]


def export(model: torch.nn.Module, folder: StoragePath, setup: Setup) -> None:
    """The model as every method exports it; in context, the demonstrations next to it (they are the
    other half of what answers a query)."""
    save_pretrained(model, folder, setup)
    if setup.params.mode == "in_context":
        demonstrations = setup.extras["demonstrations"]
        (folder / DEMONSTRATIONS_FILE).write_text(
            json.dumps({"k": setup.params.k, "rows": demonstrations["rows"], "prefix_ids": demonstrations["prefix"]})
        )


METHOD = Method(
    "fewshot",
    FewshotParams,
    build,
    kind="alternative",
    examples_param="k",
    check=check,
    prepare=prepare,
    trains=trains,
    train_rows=train_rows,
    prompt_sources=prompt_sources,
    export=export,
)
