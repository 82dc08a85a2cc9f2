"""Ray-free checks of what each method builds: frozen parts, copied layers, pretraining batches."""

from __future__ import annotations

import pytest
import torch

from ray_t2t.batching import IGNORE_INDEX
from ray_t2t.config.experiment import validate_config
from ray_t2t.errors import ConfigError
from ray_t2t.methods import Setup, get_method
from ray_t2t.methods.pretrain import collate as pretrain_collate
from ray_t2t.methods.pretrain import corrupt_spans
from ray_t2t.models import build_model, count_parameters
from ray_t2t.tokenizer import PairTokenizer

from conftest import minimal_config

pytestmark = pytest.mark.usefixtures("torch_one_thread")

WORDS = ["hello", "world", "cat"]
PHONES = ["HH AH L OW", "W ER L D", "K AE T"]


@pytest.fixture(scope="module")
def tok():
    return PairTokenizer.build(WORDS, PHONES)


@pytest.fixture(scope="module")
def saved_teacher(tmp_path_factory, tok):
    """A 4+4-layer T5 and a 4-layer GPT-2 saved like a ray_t2t export."""
    from ray_t2t.config.sections import ModelSpec

    folder = tmp_path_factory.mktemp("teachers")
    t5, _ = build_model(ModelSpec(preset="t5-tiny", overrides={"num_layers": 4, "num_decoder_layers": 4}), tok, seed=1)
    t5.save_pretrained(folder / "t5")
    gpt2, _ = build_model(ModelSpec(preset="gpt2-tiny", overrides={"n_layer": 4}), tok, seed=1)
    gpt2.save_pretrained(folder / "gpt2")
    return folder


def setup_for(tmp_path, tok, method: dict, models: dict) -> Setup:
    cfg = validate_config(minimal_config(tmp_path, methods=[method], models=models))
    return Setup(cfg, cfg.methods[0], tok, seed=0)


def test_sft_copies_alternate_teacher_blocks(tmp_path, tok, saved_teacher):
    from transformers import AutoModelForSeq2SeqLM

    setup = setup_for(
        tmp_path,
        tok,
        {"name": "sft"},
        {"student": {"preset": "t5-tiny"}, "teacher": {"name_or_path": str(saved_teacher / "t5")}},
    )
    student = get_method("sft").build(setup)
    teacher = AutoModelForSeq2SeqLM.from_pretrained(saved_teacher / "t5")
    assert (student.config.num_layers, student.config.num_decoder_layers) == (2, 2)
    s, t = student.state_dict(), teacher.state_dict()
    for student_block, teacher_block in ((0, 0), (1, 2)):
        for stack in ("encoder", "decoder"):
            key = f"{stack}.block.{student_block}.layer.0.SelfAttention.q.weight"
            assert torch.equal(s[key], t[key.replace(f".{student_block}.", f".{teacher_block}.", 1)])
    assert torch.equal(s["shared.weight"], t["shared.weight"])


def test_sft_chosen_layers_on_decoder_only(tmp_path, tok, saved_teacher):
    from transformers import AutoModelForCausalLM

    setup = setup_for(
        tmp_path,
        tok,
        {"name": "sft", "decoder_layers": [3, 1]},
        {"student": {"preset": "gpt2-tiny"}, "teacher": {"name_or_path": str(saved_teacher / "gpt2")}},
    )
    student = get_method("sft").build(setup)
    teacher = AutoModelForCausalLM.from_pretrained(saved_teacher / "gpt2")
    assert student.config.n_layer == 2
    assert torch.equal(
        student.state_dict()["transformer.h.0.attn.c_attn.weight"],
        teacher.state_dict()["transformer.h.3.attn.c_attn.weight"],
    )
    bad = setup_for(
        tmp_path,
        tok,
        {"name": "sft", "decoder_layers": [7]},
        {"student": {"preset": "gpt2-tiny"}, "teacher": {"name_or_path": str(saved_teacher / "gpt2")}},
    )
    with pytest.raises(ConfigError, match=r"decoder_layers \[7\]: the teacher has 4 decoder blocks"):
        get_method("sft").build(bad)


def test_sft_needs_a_trained_teacher(tmp_path, tok):
    setup = setup_for(
        tmp_path, tok, {"name": "sft"}, {"student": {"preset": "t5-tiny"}, "teacher": {"preset": "t5-2m"}}
    )
    with pytest.raises(ConfigError, match="copies layers of a trained teacher"):
        get_method("sft").check(setup.cfg, setup.params)


def test_partial_freezes_all_but_the_top_block(tmp_path, tok, saved_teacher):
    setup = setup_for(
        tmp_path,
        tok,
        {"name": "partial", "top_n_layers": 1},
        {"student": {"preset": "t5-tiny"}, "base": {"name_or_path": str(saved_teacher / "t5")}},
    )
    model = get_method("partial").build(setup)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("decoder.block.3.") for n in trainable)
    assert not any(n.startswith(("decoder.block.2.", "encoder.block.")) for n in trainable)
    assert "decoder.final_layer_norm.weight" in trainable
    total, trained = count_parameters(model)
    assert 0 < trained < total


def test_span_corruption_masks_spans_and_keeps_eos():
    generator = torch.Generator().manual_seed(0)
    ids = list(range(10, 30)) + [1]
    corrupted = corrupt_spans(ids, mask_id=2, density=0.15, mean_span=3.0, generator=generator)
    assert corrupted[-1] == 1 and 2 in corrupted
    kept = [i for i in corrupted if i != 2]
    assert len(kept) < len(ids) and all(i in ids for i in kept)
    assert kept[:-1] == sorted(kept[:-1])  # order preserved
    again = corrupt_spans(ids, 2, 0.15, 3.0, torch.Generator().manual_seed(0))
    assert again == corrupted


@pytest.mark.parametrize("preset, objective", [("t5-tiny", "span_corruption"), ("gpt2-tiny", "causal_lm")])
def test_pretrain_batches_are_unpaired_text(tmp_path, tok, preset, objective):
    setup = setup_for(tmp_path, tok, {"name": "pretrain", "model": "student"}, {"student": {"preset": preset}})
    setup.encoder_decoder = preset.startswith("t5")
    sources, targets = tok.encode_sources(WORDS), tok.encode_targets(PHONES)
    batch = pretrain_collate(setup, sources, targets, generator=torch.Generator().manual_seed(0))
    assert batch["labels"].shape[0] == 2 * len(WORDS)  # every source and every target, separately
    first_labels = [i for i in batch["labels"][0].tolist() if i != IGNORE_INDEX]
    assert first_labels == sources[0]
    if objective == "causal_lm":
        assert torch.equal(batch["input_ids"][0, : len(sources[0])], torch.tensor(sources[0]))
    model, _ = build_model(setup.cfg.models.student, tok, seed=0)
    assert torch.isfinite(model(**batch).loss)


def test_partial_adapters_train_only_ia3_vectors(tmp_path, tok, saved_teacher):
    setup = setup_for(
        tmp_path,
        tok,
        {"name": "partial", "trainable": "adapters"},
        {"student": {"preset": "t5-tiny"}, "base": {"name_or_path": str(saved_teacher / "t5")}},
    )
    model = get_method("partial").build(setup)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("ia3_l" in n for n in trainable)
    get_method("partial").export(model, tmp_path / "export", setup)
    from transformers import AutoModelForSeq2SeqLM

    merged = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "export")
    assert not any("ia3" in n for n, _ in merged.named_parameters())


class KdParams:
    def __init__(self, divergence="forward_kl", temperature=2.0, alpha=1.0):
        self.divergence, self.temperature, self.alpha = divergence, temperature, alpha


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_kd_loss_is_zero_when_the_student_matches_the_teacher(kind):
    from ray_t2t.methods.kd_logits import kd_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 11)
    labels = torch.tensor([[4, 5, -100], [6, -100, -100]])
    params = KdParams(kind, temperature=2.0)
    mask = labels != -100
    teacher_logprobs, teacher_ids = torch.log_softmax(logits[mask] / 2.0, -1).topk(4, -1)
    assert kd_loss(logits, labels, teacher_ids, teacher_logprobs, True, params) == pytest.approx(0.0, abs=1e-6)
    other = kd_loss(torch.randn(2, 3, 11), labels, teacher_ids, teacher_logprobs, True, params)
    assert other > 0.01


def test_kd_loss_with_the_whole_vocabulary_is_the_full_kl():
    from ray_t2t.methods.kd_logits import kd_loss

    torch.manual_seed(1)
    student, teacher = torch.randn(1, 4, 9), torch.randn(1, 4, 9)
    labels = torch.tensor([[1, 2, 3, 4]])
    temperature = 1.5
    t_logprobs, t_ids = torch.log_softmax(teacher[0] / temperature, -1).topk(9, -1)  # k = vocabulary
    full = (
        torch.nn.functional.kl_div(
            torch.log_softmax(student[0] / temperature, -1),
            torch.log_softmax(teacher[0] / temperature, -1),
            log_target=True,
            reduction="none",
        )
        .sum(-1)
        .mean()
        * temperature**2
    )
    ours = kd_loss(student, labels, t_ids, t_logprobs, True, KdParams(temperature=temperature))
    assert ours == pytest.approx(float(full), rel=1e-5)
    # decoder-only: logits at t predict the label at t+1
    shifted = torch.cat([student, torch.zeros(1, 1, 9)], dim=1)
    shifted_labels = torch.cat([torch.tensor([[-100]]), labels], dim=1)
    assert kd_loss(
        shifted, shifted_labels, t_ids, t_logprobs, False, KdParams(temperature=temperature)
    ) == pytest.approx(float(full), rel=1e-5)


def test_kd_logits_refuses_what_it_cannot_do(tmp_path):
    from ray_t2t.methods.kd_logits import check

    cfg = validate_config(
        minimal_config(
            tmp_path,
            methods=[{"name": "kd_logits", "top_k": 64}],
            models={"student": {"preset": "t5-tiny"}, "teacher": {"preset": "t5-tiny"}},
        )
    )
    with pytest.raises(ConfigError, match="top_k=64 exceeds soft_targets.top_k=32"):
        check(cfg, cfg.methods[0])
    # online: a live teacher's full logits, top_k ignored; it must be of the student's family
    online = {"name": "kd_logits", "teacher_source": "online", "top_k": 64}
    cfg = validate_config(
        minimal_config(
            tmp_path, methods=[online], models={"student": {"preset": "t5-tiny"}, "teacher": {"preset": "t5-tiny"}}
        )
    )
    check(cfg, cfg.methods[0])
    cfg = validate_config(
        minimal_config(
            tmp_path, methods=[online], models={"student": {"preset": "t5-tiny"}, "teacher": {"preset": "gpt2-tiny"}}
        )
    )
    with pytest.raises(
        ConfigError, match=r"student \(encoder-decoder\) and teacher \(decoder-only\) must be of one family"
    ):
        check(cfg, cfg.methods[0])
