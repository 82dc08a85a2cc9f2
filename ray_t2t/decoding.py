"""Decoding: batched greedy or beam search with model.generate, for both model families.

    from ray_t2t.decoding import generate, generate_ids

    predictions = generate(model, tok, tok.encode_sources(words), max_new_tokens=32)             # greedy
    predictions = generate(model, tok, sources, max_new_tokens=32, num_beams=4, batch_size=128)  # beam
    target_ids = generate_ids(model, tok, sources, max_new_tokens=32)  # token ids, e.g. to distill

Results come back in input order. Inputs are sorted by length inside the call, so each batch holds
sources of similar length and little padding. Decoding is deterministic (do_sample=False) and runs on
the device the model is on; the model is put in eval mode and restored to its previous mode afterwards.

Decoder-only models get the left-padded prompts of ray_t2t.batching (source, sep), the same format
they were trained on. With left padding, position ids must start at 0 at each prompt's first real
token, not at the first pad; transformers' generate derives them from the attention mask
(cumsum - 1) for every model whose forward takes position_ids (GPT-2, Llama), and the tests check
that a batch decodes exactly as each example alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ray_t2t.batching import prompts_decoder_only, prompts_encoder_decoder
from ray_t2t.models import is_encoder_decoder

if TYPE_CHECKING:
    import torch

    from ray_t2t.tokenizer import PairTokenizer


def generate(
    model: Any,
    tokenizer: PairTokenizer,
    source_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    num_beams: int = 1,
    batch_size: int = 256,
) -> list[str]:
    """Decoded target text for each source (tokenizer.decode_targets), in input order.

    Raises ValueError if max_new_tokens, num_beams or batch_size is below 1, or a source is empty.
    """
    return tokenizer.decode_targets(
        generate_ids(
            model,
            tokenizer,
            source_ids,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            batch_size=batch_size,
        )
    )


def generate_ids(
    model: Any,
    tokenizer: PairTokenizer,
    source_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    num_beams: int = 1,
    batch_size: int = 256,
    exact_length: bool = False,
) -> list[list[int]]:
    """Generated target ids for each source, in input order: up to and including the first
    end-of-sequence (all generated tokens if there is none); no prompt, decoder start or padding.
    exact_length: decode exactly max_new_tokens for every source, end-of-sequence ignored (what a
    speed measurement needs: the work then does not depend on when a model stops); the ids are then
    all max_new_tokens generated.

    `model` may be wrapped (DistributedDataParallel, a DeepSpeed engine): the module with a
    `generate` method inside is used.

    Raises ValueError if max_new_tokens, num_beams or batch_size is below 1, or a source is empty.
    """
    import torch

    for name, value in (("max_new_tokens", max_new_tokens), ("num_beams", num_beams), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    model = _unwrap(model)
    # Shortest first; ties keep input order, so a given input list always gives the same batches.
    order = sorted(range(len(source_ids)), key=lambda i: len(source_ids[i]))
    results: list[list[int]] = [[] for _ in source_ids]
    was_training = model.training
    model.eval()  # no dropout while decoding
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                generated = _generate_batch(
                    model, tokenizer, [source_ids[i] for i in chunk], max_new_tokens, num_beams, exact_length
                )
                for i, ids in zip(chunk, generated):
                    results[i] = ids
    finally:
        model.train(was_training)
    return results


def _unwrap(model: Any) -> Any:
    while not hasattr(model, "generate") and hasattr(model, "module"):
        model = model.module
    return model


def _generate_batch(
    model: Any,
    tokenizer: PairTokenizer,
    sources: list[Sequence[int]],
    max_new_tokens: int,
    num_beams: int,
    exact_length: bool = False,
) -> list[list[int]]:
    """Generated ids of one batch (see generate_ids)."""
    device = _device_of(model)
    encoder_decoder = is_encoder_decoder(model)
    if encoder_decoder:
        input_ids, attention_mask = prompts_encoder_decoder(sources, tokenizer.pad_id)
    else:
        input_ids, attention_mask = prompts_decoder_only(sources, tokenizer.pad_id, tokenizer.sep_id)
    output = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        num_return_sequences=1,
        do_sample=False,
        pad_token_id=tokenizer.pad_id,
        eos_token_id=tokenizer.eos_id,
        **({"min_new_tokens": max_new_tokens} if exact_length else {}),
    )
    # An encoder-decoder's output starts with the decoder start token (pad in a fresh model, but eos in
    # a pretrained BART: left in, it would cut the text to nothing). A decoder-only output starts with
    # the (left-padded) prompt.
    new_tokens = output[:, 1:] if encoder_decoder else output[:, input_ids.shape[1] :]
    if exact_length:
        return new_tokens.tolist()
    return [_until_eos(row, tokenizer.eos_id) for row in new_tokens.tolist()]


def _until_eos(ids: list[int], eos_id: int) -> list[int]:
    """`ids` up to and including the first eos (the rest is padding after a finished sequence)."""
    return ids[: ids.index(eos_id) + 1] if eos_id in ids else ids


def _device_of(model: Any) -> torch.device:
    return next(model.parameters()).device
