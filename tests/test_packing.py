"""Sequence packing (training.packing): packed and padded batches of the same examples give the same
loss and the same gradients, for GPT-2 and Llama, eager and SDPA attention; nothing crosses an
example's boundary; kd_logits' teacher positions move with their examples; packing is refused
where it cannot apply."""

from __future__ import annotations

import random
import re

import pytest
import torch

from ray_t2t.batching import collate_decoder_only
from ray_t2t.batching.packing import pack_batch, pack_rows
from ray_t2t.config.sections import ModelSpec
from ray_t2t.models import build_model
from ray_t2t.tokenizer import PairTokenizer

WORDS = ["cat", "house", "a", "encyclopedia", "tree", "ox", "philosophy", "run", "abracadabra", "me"]
PHONES = ["K AE T", "HH AW S", "AH", "IH N S AY K L AH P IY D IY AH", "T R IY", "AA K S", "F IH L AA S AH F IY"]
PHONES += ["R AH N", "AE B R AH K AH D AE B R AH", "M IY"]


@pytest.fixture(scope="module")
def tok() -> PairTokenizer:
    return PairTokenizer.build(WORDS, PHONES, "char", "word")


def batch_of(tok: PairTokenizer) -> dict:
    return collate_decoder_only(tok.encode_sources(WORDS), tok.encode_targets(PHONES), tok.pad_id, tok.sep_id)


def test_rows_are_first_fit_decreasing_and_never_overflow():
    lengths = [5, 9, 3, 7, 2, 9, 1]
    rows = pack_rows(lengths, 10)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 10 for row in rows)
    assert rows == [[1, 6], [5], [3, 2], [0, 4]]
    with pytest.raises(ValueError, match="11 tokens does not fit a row of 10"):
        pack_rows([11], 10)


def test_packing_removes_padding_and_restarts_positions(tok):
    batch = batch_of(tok)
    packed = pack_batch(batch, tok.pad_id)
    real = int(batch["attention_mask"].sum())
    assert packed["input_ids"].shape[0] < batch["input_ids"].shape[0]
    assert packed["input_ids"].numel() < batch["input_ids"].numel()
    assert (packed["input_ids"] != tok.pad_id).sum() == real
    assert sorted(packed["labels"][packed["labels"] != -100].tolist()) == sorted(
        batch["labels"][batch["labels"] != -100].tolist()
    )
    assert "attention_mask" not in packed and packed["use_cache"] is False
    # every example starts at position 0 with a prompt token (no loss across a boundary)
    starts = packed["position_ids"] == 0
    assert int(starts[packed["input_ids"] != tok.pad_id].sum()) == len(WORDS)
    assert (packed["labels"][starts] == -100).all()


@pytest.mark.parametrize("preset", ["gpt2-tiny", "llama-tiny"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_packed_and_padded_losses_and_gradients_agree(tok, preset, attention):
    model, _ = build_model(ModelSpec(preset=preset, attn_implementation=attention), tok, seed=0)
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    batch = batch_of(tok)
    padded_loss = model(**batch).loss
    padded_loss.backward()
    padded_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    packed = pack_batch(batch, tok.pad_id)
    assert packed["input_ids"].shape[0] < len(WORDS)
    packed_loss = model(**packed).loss
    packed_loss.backward()
    torch.testing.assert_close(packed_loss, padded_loss, rtol=1e-5, atol=1e-6)
    for padded, param in zip(padded_grads, model.parameters()):
        torch.testing.assert_close(param.grad, padded, rtol=1e-4, atol=1e-6)


def test_without_position_ids_the_packed_rows_would_attend_across_examples(tok):
    """The control: the same packed rows without their position ids give another loss, so the test
    above would fail if attention or positions crossed a boundary."""
    model, _ = build_model(ModelSpec(preset="llama-tiny"), tok, seed=0)
    batch = batch_of(tok)
    packed = pack_batch(batch, tok.pad_id)
    with torch.no_grad():
        right = model(**packed).loss
        crossing = model(**{k: v for k, v in packed.items() if k != "position_ids"}).loss
        padded = model(**batch).loss
    assert abs(float(right) - float(padded)) < 1e-5
    assert abs(float(crossing) - float(right)) > 1e-3


def test_teacher_positions_move_with_their_examples(tok):
    """kd_logits flattens its teacher top-k over labelled positions, row by row: after packing, row
    r's labelled tokens and the teacher entries in the same place still belong to one example."""
    batch = batch_of(tok)
    labelled = batch["labels"][batch["labels"] != -100]
    # a stand-in for teacher top-k ids: each position carries its own label, so alignment is checkable
    batch["teacher_topk_ids"] = labelled.unsqueeze(-1).repeat(1, 4)
    batch["teacher_topk_logprobs"] = torch.randn(len(labelled), 4)
    packed = pack_batch(batch, tok.pad_id, ("teacher_topk_ids", "teacher_topk_logprobs"))
    packed_labelled = packed["labels"][packed["labels"] != -100]
    assert torch.equal(packed["teacher_topk_ids"][:, 0], packed_labelled)
    assert packed["teacher_topk_logprobs"].shape == batch["teacher_topk_logprobs"].shape


def test_unknown_batch_keys_are_refused(tok):
    batch = batch_of(tok) | {"decoder_input_ids": torch.zeros(len(WORDS), 3, dtype=torch.long)}
    with pytest.raises(ValueError, match="decoder_input_ids"):
        pack_batch(batch, tok.pad_id)


def test_random_batches_pack_every_token_once(tok):
    rng = random.Random(0)
    for _ in range(20):
        chosen = rng.sample(range(len(WORDS)), rng.randint(1, len(WORDS)))
        sources = tok.encode_sources([WORDS[i] for i in chosen])
        targets = tok.encode_targets([PHONES[i] for i in chosen])
        batch = collate_decoder_only(sources, targets, tok.pad_id, tok.sep_id)
        packed = pack_batch(batch, tok.pad_id)
        assert packed["input_ids"].shape[1] <= batch["input_ids"].shape[1]
        assert sorted(packed["input_ids"][packed["input_ids"] != tok.pad_id].tolist()) == sorted(
            batch["input_ids"][batch["attention_mask"] == 1].tolist()
        )


def test_kd_logits_loss_is_the_same_packed(tok):
    """The distillation term reads the teacher's entries by labelled position: packed, with its
    position keys moved along, it equals the padded batch's."""
    from ray_t2t.methods.kd_logits import TEACHER_KEYS, KdLogitsParams, kd_loss

    model, _ = build_model(ModelSpec(preset="gpt2-tiny"), tok, seed=0)
    batch = batch_of(tok)
    positions = int((batch["labels"] != -100).sum())
    generator = torch.Generator().manual_seed(0)
    batch["teacher_topk_ids"] = torch.randint(0, tok.vocab_size, (positions, 4), generator=generator)
    batch["teacher_topk_logprobs"] = torch.randn(positions, 4, generator=generator).log_softmax(-1)
    params = KdLogitsParams(name="kd_logits")

    def distillation_term(b: dict) -> float:
        inputs = {k: v for k, v in b.items() if k not in TEACHER_KEYS}
        with torch.no_grad():
            logits = model(**inputs).logits
        return float(kd_loss(logits, b["labels"], *(b[k] for k in TEACHER_KEYS), False, params))

    packed = pack_batch(batch, tok.pad_id, TEACHER_KEYS)
    assert distillation_term(packed) == pytest.approx(distillation_term(batch), rel=1e-5)


# ------------------------------------------------------------------------- through the training loop

TRAINING = {"batch_size": 32, "max_steps": 30, "warmup_steps": 3, "learning_rate": 3e-3, "group_by_length": False}


@pytest.mark.parametrize("preset", ["gpt2-tiny", "llama-tiny"])
def test_packed_training_follows_the_padded_curve_and_learns(tmp_path, preset):
    """The same examples at every step, so the same curve (up to float rounding), less padding."""
    from ray_t2t.config.experiment import validate_config
    from ray_t2t.data import prepare_data

    from conftest import LOCAL_DATA, minimal_config, train_locally

    dropout = {"gpt2-tiny": {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}, "llama-tiny": {}}[preset]
    student = {"preset": preset, "overrides": dropout}
    records = {}
    for packing in (False, True):
        raw = minimal_config(tmp_path, methods=[{"name": "scratch"}], models={"student": student})
        raw.update(data=LOCAL_DATA, training=TRAINING | {"packing": packing}, eval={"every_n_steps": 15})
        cfg = validate_config(raw)
        data = prepare_data(cfg)
        records[packing] = train_locally(cfg, "scratch", data.path, tmp_path / f"packing-{packing}")
    padded, packed = (records[k]["learning_curve"] for k in (False, True))
    assert [p["step"] for p in packed] == [p["step"] for p in padded] == [0, 15, 30]
    for a, b in zip(padded, packed):
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=2e-3), (padded, packed)
    assert packed[-1]["val_loss"] < packed[0]["val_loss"]
    assert packed[-1]["val_token_accuracy"] > packed[0]["val_token_accuracy"]
    assert records[True]["data"]["tokens_seen"] == records[False]["data"]["tokens_seen"]


@pytest.mark.parametrize(
    "method, student, message",
    [
        ({"name": "scratch"}, {"preset": "t5-tiny"}, "packing is for decoder-only models (GPT-2, Llama)"),
        ({"name": "kd_hidden"}, {"preset": "gpt2-tiny"}, "method 'kd_hidden' does not pack its batches"),
        ({"name": "gan"}, {"preset": "gpt2-tiny"}, "method 'gan' does not pack its batches"),
    ],
)
def test_packing_is_refused_where_it_cannot_apply(tmp_path, method, student, message):
    from ray_t2t.config.experiment import validate_config
    from ray_t2t.errors import ConfigError
    from ray_t2t.methods import get_method

    from conftest import minimal_config

    teacher = {"teacher": {"preset": "gpt2-tiny"}} if method["name"] == "kd_hidden" else {}
    raw = minimal_config(tmp_path, methods=[method], models={"student": student, **teacher})
    raw["training"] = {"packing": True}
    cfg = validate_config(raw)
    with pytest.raises(ConfigError, match=re.escape(message)):
        get_method(method["name"]).check_config(cfg, cfg.methods[0])
