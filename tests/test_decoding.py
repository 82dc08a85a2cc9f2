"""ray_t2t.batching and ray_t2t.decoding: collated tensors, and batched greedy/beam decoding of tiny
models that have memorised a few examples."""

from __future__ import annotations

import pytest
import torch

from ray_t2t.batching import (
    IGNORE_INDEX,
    collate_decoder_only,
    collate_encoder_decoder,
    prompts_decoder_only,
    prompts_encoder_decoder,
)
from ray_t2t.config.sections import ModelSpec
from ray_t2t.decoding import generate, generate_ids
from ray_t2t.models import build_model, is_encoder_decoder
from ray_t2t.tokenizer import PairTokenizer

# No target repeats a phoneme: a one-layer model with relative positions (t5-tiny) cannot always tell
# two occurrences of the same input token apart, and would then not memorise the example exactly.
WORDS = ["a", "cat", "house", "zebra"]
PHONEMES = ["AH", "K AE T", "HH AW S", "Z IY B R AH"]
UNSEEN = ["bat", "ah", "zzzzzzzz", "hose", "c"]  # varied lengths: lots of left padding in a batch
M = IGNORE_INDEX
PAD, EOS, SEP = 0, 1, 3


@pytest.fixture(scope="module")
def tok() -> PairTokenizer:
    return PairTokenizer.build(WORDS + UNSEEN, PHONEMES, "char", "word")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ------------------------------------------------------------------------------------ batching


def test_collate_encoder_decoder_pads_right():
    batch = collate_encoder_decoder([[5, 6, EOS], [7, EOS]], [[8, EOS], [9, 10, 11, EOS]], PAD)
    assert batch["input_ids"].tolist() == [[5, 6, EOS], [7, EOS, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[8, EOS, M, M], [9, 10, 11, EOS]]
    assert all(t.dtype == torch.long for t in batch.values())


def test_encoder_prompts_are_the_training_inputs():
    sources = [[5, 6, EOS], [7, EOS]]
    input_ids, attention_mask = prompts_encoder_decoder(sources, PAD)
    batch = collate_encoder_decoder(sources, [[8, EOS], [9, EOS]], PAD)
    assert torch.equal(input_ids, batch["input_ids"]) and torch.equal(attention_mask, batch["attention_mask"])


def test_collate_decoder_only_masks_the_prompt():
    batch = collate_decoder_only([[5, 6, EOS], [7, EOS]], [[8, EOS], [9, 10, 11, EOS]], PAD, SEP)
    # source without its eos, sep, target with its eos; right padding
    assert batch["input_ids"].tolist() == [[5, 6, SEP, 8, EOS, PAD], [7, SEP, 9, 10, 11, EOS]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[M, M, M, 8, EOS, M], [M, M, 9, 10, 11, EOS]]


def test_collate_decoder_only_when_pad_is_eos():
    # GPT-2's own tokenizer has one token for pad, eos and sep: labels still keep the target's eos.
    batch = collate_decoder_only([[5, 50], [6, 7, 50]], [[8, 50], [9, 50]], 50, 50)
    assert batch["input_ids"].tolist() == [[5, 50, 8, 50, 50], [6, 7, 50, 9, 50]]
    assert batch["labels"].tolist() == [[M, M, 8, 50, M], [M, M, M, 9, 50]]


def test_prompts_pad_left_and_match_training():
    sources, targets = [[5, 6, EOS], [7, EOS]], [[8, EOS], [9, EOS]]
    input_ids, attention_mask = prompts_decoder_only(sources, PAD, SEP)
    assert input_ids.tolist() == [[5, 6, SEP], [PAD, 7, SEP]]
    assert attention_mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    training = collate_decoder_only(sources, targets, PAD, SEP)["input_ids"].tolist()
    for row, prompt, mask in zip(training, input_ids.tolist(), attention_mask.tolist()):
        real = [t for t, m in zip(prompt, mask) if m]
        assert row[: len(real)] == real


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: collate_encoder_decoder([], [], PAD), "empty batch"),
        (lambda: collate_encoder_decoder([[5, EOS]], [[6, EOS], [7, EOS]], PAD), "1 sources but 2 targets"),
        (lambda: collate_decoder_only([[5, EOS]], [[]], PAD, SEP), "empty target"),
        (lambda: prompts_decoder_only([[5, EOS], []], PAD, SEP), "empty source"),
        (lambda: prompts_encoder_decoder([], PAD), "empty batch"),
    ],
)
def test_collate_rejects_bad_batches(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ------------------------------------------------------------------------------------ decoding


def memorised(preset: str, tok: PairTokenizer):
    """A tiny model trained on (WORDS, PHONEMES) until it has memorised them."""
    model, _ = build_model(ModelSpec(preset=preset), tok, seed=0)
    sources, targets = tok.encode_sources(WORDS), tok.encode_targets(PHONEMES)
    if is_encoder_decoder(model):
        batch = collate_encoder_decoder(sources, targets, tok.pad_id)
    else:
        batch = collate_decoder_only(sources, targets, tok.pad_id, tok.sep_id)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    # Dropout stays off (eval mode): it would only slow memorising down. Gradients flow regardless.
    for _ in range(300):
        loss = model(**batch).loss
        if loss.item() < 0.01:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.01, f"{preset} did not memorise its 4 examples (loss {loss.item():.3f})"
    return model


@pytest.fixture(scope="module", params=["t5-tiny", "bart-tiny", "gpt2-tiny", "llama-tiny"])
def trained(request, tok):
    return request.param, memorised(request.param, tok)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_reproduces_memorised_targets(trained, tok, num_beams):
    _, model = trained
    predictions = generate(model, tok, tok.encode_sources(WORDS), max_new_tokens=10, num_beams=num_beams)
    assert predictions == PHONEMES


def test_generate_ids_end_with_eos(trained, tok):
    _, model = trained
    ids = generate_ids(model, tok, tok.encode_sources(WORDS), max_new_tokens=10)
    assert ids == tok.encode_targets(PHONEMES)  # no prompt, decoder start or padding


@pytest.mark.parametrize("num_beams", [1, 3])
def test_batched_decoding_equals_one_at_a_time(trained, tok, num_beams):
    # Sources of 1 to 8 characters in one batch: the short ones are heavily left-padded (decoder-only),
    # which decodes correctly only if position ids skip the padding (GPT-2's learned positions).
    _, model = trained
    sources = tok.encode_sources(UNSEEN + WORDS)
    batched = generate_ids(model, tok, sources, max_new_tokens=10, num_beams=num_beams)
    alone = [generate_ids(model, tok, [s], max_new_tokens=10, num_beams=num_beams)[0] for s in sources]
    assert batched == alone
    # Several batches (and the length sort inside each call) still return input order.
    assert generate_ids(model, tok, sources, max_new_tokens=10, num_beams=num_beams, batch_size=2) == batched
    assert generate_ids(model, tok, sources[::-1], max_new_tokens=10, num_beams=num_beams) == batched[::-1]


@pytest.mark.parametrize("preset", ["t5-tiny", "gpt2-tiny"])
def test_generate_respects_limits_and_restores_mode(preset, tok):
    model, _ = build_model(ModelSpec(preset=preset), tok, seed=0)  # untrained: rarely says eos
    sources = tok.encode_sources(WORDS)
    model.train()
    ids = generate_ids(model, tok, sources, max_new_tokens=3)
    assert model.training
    assert len(ids) == len(WORDS) and all(1 <= len(row) <= 3 for row in ids)
    assert all(isinstance(text, str) for text in generate(model, tok, sources, max_new_tokens=3, num_beams=2))
    model.eval()
    generate(model, tok, sources, max_new_tokens=3)
    assert not model.training
    assert generate(model, tok, [], max_new_tokens=3) == []


def test_generate_rejects_bad_arguments(tok):
    model, _ = build_model(ModelSpec(preset="gpt2-tiny"), tok, seed=0)
    sources = tok.encode_sources(WORDS)
    bad = [{"max_new_tokens": 0}, {"max_new_tokens": 3, "num_beams": 0}, {"max_new_tokens": 3, "batch_size": 0}]
    for kwargs in bad:
        with pytest.raises(ValueError, match=f"{next(k for k, v in kwargs.items() if v == 0)} must be at least 1"):
            generate(model, tok, sources, **kwargs)


def test_generate_unwraps_wrapped_models(tok):
    model, _ = build_model(ModelSpec(preset="llama-tiny"), tok, seed=0)

    class Wrapper(torch.nn.Module):  # what DistributedDataParallel or a DeepSpeed engine looks like
        def __init__(self, module):
            super().__init__()
            self.module = module

    sources = tok.encode_sources(WORDS)
    assert generate_ids(Wrapper(model), tok, sources, max_new_tokens=4) == generate_ids(
        model, tok, sources, max_new_tokens=4
    )
