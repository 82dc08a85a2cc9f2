"""ray_t2t.models: building every family from presets or a saved folder, overrides, seeds, counting."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from ray_t2t.batching import collate_decoder_only, collate_encoder_decoder
from ray_t2t.config.sections import ModelSpec
from ray_t2t.models import (
    DECODER_ONLY,
    ENCODER_DECODER,
    ModelInfo,
    build_model,
    count_parameters,
    forward_flops_per_token,
    is_encoder_decoder,
    model_info,
    training_flops_per_token,
)
from ray_t2t.tokenizer import PairTokenizer

WORDS = ["a", "cat", "house", "zebra"]
PHONEMES = ["AH", "K AE T", "HH AW S", "Z IY B R AH"]
FAMILIES = {
    "t5-tiny": (ENCODER_DECODER, "t5"),
    "bart-tiny": (ENCODER_DECODER, "bart"),
    "gpt2-tiny": (DECODER_ONLY, "gpt2"),
    "llama-tiny": (DECODER_ONLY, "llama"),
}


@pytest.fixture(scope="module")
def tok() -> PairTokenizer:
    return PairTokenizer.build(WORDS, PHONEMES, "char", "word")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def build(preset: str, tok: PairTokenizer, seed: int | None = 0, **spec):
    return build_model(ModelSpec(preset=preset, **spec), tok, seed=seed)


def collate(model, tok: PairTokenizer) -> dict[str, torch.Tensor]:
    sources, targets = tok.encode_sources(WORDS), tok.encode_targets(PHONEMES)
    if is_encoder_decoder(model):
        return collate_encoder_decoder(sources, targets, tok.pad_id)
    return collate_decoder_only(sources, targets, tok.pad_id, tok.sep_id)


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------- presets


@pytest.mark.parametrize("preset", list(FAMILIES))
def test_preset_builds_trains_and_counts(preset, tok):
    model, info = build(preset, tok)
    family, architecture = FAMILIES[preset]
    assert (info.family, info.architecture) == (family, architecture)
    assert is_encoder_decoder(model) == (family == ENCODER_DECODER)
    assert not model.training  # built models start in eval mode

    # Embeddings are exactly the tokenizer's vocabulary, token ids are the tokenizer's.
    assert model.get_input_embeddings().num_embeddings == tok.vocab_size
    assert model.get_output_embeddings().weight.shape[0] == tok.vocab_size
    assert (model.config.pad_token_id, model.config.eos_token_id) == (tok.pad_id, tok.eos_id)
    assert model.generation_config.pad_token_id == tok.pad_id
    if family == ENCODER_DECODER:
        assert model.config.decoder_start_token_id == tok.pad_id
        assert model.generation_config.decoder_start_token_id == tok.pad_id
    assert next(model.parameters()).dtype == torch.float32

    total = sum(p.numel() for p in model.parameters())
    assert (info.total_params, info.trainable_params) == (total, total)
    assert count_parameters(model) == (total, total)

    model.train()
    loss = model(**collate(model, tok)).loss
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()  # gradients reach the embeddings
    assert model.get_input_embeddings().weight.grad.abs().sum() > 0


def test_freezing_lowers_trainable_count(tok):
    model, info = build("t5-tiny", tok)
    embedding = model.get_input_embeddings().weight
    embedding.requires_grad_(False)
    total, trainable = count_parameters(model)
    assert total == info.total_params
    assert trainable == info.total_params - embedding.numel()
    assert model_info(model).trainable_params == trainable


def test_training_flops_split_encoder_and_decoder(tok):
    t5, info = build("t5-tiny", tok)
    source, target = training_flops_per_token(t5)
    encoder = sum(p.numel() for n, p in t5.get_encoder().named_parameters() if "embed_tokens" not in n)
    assert source == 6 * encoder  # all trainable: 2N forward + 2N + 2N backward
    assert source + target == 6 * info.total_params  # the shared embedding counts once, as the output layer
    for name, param in t5.get_encoder().named_parameters():
        param.requires_grad_("embed_tokens" in name)  # the embedding is shared with the decoder
    frozen_source, frozen_target = training_flops_per_token(t5)
    assert (frozen_source, frozen_target) == (4 * encoder, target)
    gpt2, info = build("gpt2-tiny", tok)
    assert training_flops_per_token(gpt2) == (6 * info.total_params, 6 * info.total_params)


def test_a_zero3_partitioned_parameter_counts_whole():
    layer = torch.nn.Linear(4, 3)
    layer.weight.data = torch.empty(0)  # what ZeRO-3 leaves on a rank, with the whole size in ds_numel
    layer.weight.ds_numel = 12
    assert count_parameters(layer) == (15, 15)


def test_forward_flops_are_2n_per_side_whatever_trains(tok):
    t5, info = build("t5-tiny", tok)
    encoder = sum(p.numel() for n, p in t5.get_encoder().named_parameters() if "embed_tokens" not in n)
    assert forward_flops_per_token(t5) == (2 * encoder, 2 * (info.total_params - encoder))
    t5.requires_grad_(False)  # a frozen teacher costs the same forward
    assert forward_flops_per_token(t5) == (2 * encoder, 2 * (info.total_params - encoder))
    gpt2, info = build("gpt2-tiny", tok)
    assert forward_flops_per_token(gpt2) == (2 * info.total_params, 2 * info.total_params)


def test_describe():
    info = ModelInfo(family=ENCODER_DECODER, architecture="t5", total_params=520_000, trainable_params=12_345)
    assert info.describe() == "t5 encoder-decoder, 0.52M parameters (0.01M trainable)"
    info = ModelInfo(family=DECODER_ONLY, architecture="gpt2", total_params=124_440_000, trainable_params=124_440_000)
    assert info.describe() == "gpt2 decoder-only, 124.44M parameters (124.44M trainable)"


@pytest.mark.parametrize("preset", ["t5-tiny", "llama-tiny"])
def test_same_seed_same_weights(preset, tok):
    first, _ = build(preset, tok, seed=7)
    second, _ = build(preset, tok, seed=7)
    other, _ = build(preset, tok, seed=8)
    assert same_weights(first, second)
    assert not same_weights(first, other)


def test_seeding_leaves_the_global_rng_alone(tok):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build("gpt2-tiny", tok, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_override_changes_architecture(tok):
    base, base_info = build("t5-tiny", tok)
    deeper, deeper_info = build("t5-tiny", tok, overrides={"num_layers": 3})
    assert deeper.config.num_layers == 3
    assert len(deeper.encoder.block) == 3
    assert deeper_info.total_params > base_info.total_params


def test_override_recomputes_derived_config_values(tok):
    # Llama derives head_dim from hidden_size in its constructor; a later setattr would leave it at 16.
    model, _ = build("llama-tiny", tok, overrides={"hidden_size": 64})
    assert model.config.head_dim == 32
    assert torch.isfinite(model(**collate(model, tok)).loss)


def test_override_alias_is_resolved(tok):
    model, _ = build("gpt2-tiny", tok, overrides={"num_hidden_layers": 3})  # GPT-2 calls it n_layer
    assert model.config.n_layer == 3 and len(model.transformer.h) == 3


def test_unknown_override_is_named(tok):
    with pytest.raises(ValueError, match=r"preset 'gpt2-tiny'.*unknown override 'num_layers'.*'n_layer'"):
        build("gpt2-tiny", tok, overrides={"num_layers": 3})


def test_token_id_override_is_refused(tok):
    with pytest.raises(ValueError, match="'pad_token_id'.*set from the tokenizer"):
        build("t5-tiny", tok, overrides={"pad_token_id": 5})


def test_invalid_override_value_is_a_value_error(tok):
    with pytest.raises(ValueError, match=r"preset 'llama-tiny'.*invalid model config.*hidden_size"):
        build("llama-tiny", tok, overrides={"hidden_size": "wide"})


def test_bart_does_not_force_its_default_eos(tok):
    # BartConfig's default forced_eos_token_id=2 is <unk> in a built vocabulary.
    model, _ = build("bart-tiny", tok)
    assert model.config.forced_eos_token_id is None
    assert model.generation_config.forced_eos_token_id is None


def test_import_is_light():
    code = "import sys, ray_t2t.models, ray_t2t.batching, ray_t2t.decoding; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------------ name or path


@pytest.fixture(scope="module", params=["t5-tiny", "gpt2-tiny"])
def saved(request, tok, tmp_path_factory):
    """(preset, folder, model) of a tiny model saved with save_pretrained, weights moved off any init."""
    model, _ = build(request.param, tok, seed=1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.5)
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    return request.param, str(folder), model


def test_load_pretrained_weights_by_path(saved, tok):
    preset, folder, original = saved
    loaded, info = build_model(ModelSpec(name_or_path=folder), tok)
    assert same_weights(loaded, original)
    assert info == model_info(original)
    assert not loaded.training


def test_architecture_only_is_a_fresh_init(saved, tok):
    preset, folder, original = saved
    fresh, _ = build_model(ModelSpec(name_or_path=folder, pretrained=False), tok, seed=3)
    assert not same_weights(fresh, original)
    # Same architecture and seed as the preset: the very same initialization.
    assert same_weights(fresh, build(preset, tok, seed=3)[0])


def test_overrides_by_path(saved, tok):
    preset, folder, _ = saved
    key = {"t5-tiny": "dropout_rate", "gpt2-tiny": "resid_pdrop"}[preset]
    model, _ = build_model(ModelSpec(name_or_path=folder, overrides={key: 0.25}), tok)
    assert getattr(model.config, key) == 0.25
    with pytest.raises(ValueError, match=f"model '{folder}'.*unknown override 'no_such_key'"):
        build_model(ModelSpec(name_or_path=folder, overrides={"no_such_key": 1}), tok)


def test_larger_tokenizer_grows_embeddings(saved, tok):
    preset, folder, original = saved
    bigger = PairTokenizer.build(WORDS + ["quixotic"], PHONEMES + ["K W IH K S AA T IH K"], "char", "word")
    assert bigger.vocab_size > tok.vocab_size
    model, info = build_model(ModelSpec(name_or_path=folder), bigger, seed=0)
    assert model.get_input_embeddings().num_embeddings == bigger.vocab_size
    assert model.get_output_embeddings().weight.shape[0] == bigger.vocab_size
    old_rows = original.get_input_embeddings().weight
    assert torch.equal(model.get_input_embeddings().weight[: tok.vocab_size], old_rows)
    assert info.total_params == sum(p.numel() for p in model.parameters())


def test_missing_path_raises(tmp_path, tok):
    with pytest.raises(OSError):
        build_model(ModelSpec(name_or_path=str(tmp_path / "nothing")), tok)
