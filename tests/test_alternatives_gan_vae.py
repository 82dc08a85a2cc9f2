"""The alternative methods gan and vae: their losses and gradients, the D:G step schedule, free bits and
KL annealing, exports that plain transformers loads (without Ray); then a short run of the shared loop
for each that improves its task metrics (LocalContext, no Ray), and one gan run through Ray Train."""

from __future__ import annotations

import pytest
import torch

from ray_t2t.config.experiment import validate_config
from ray_t2t.errors import ConfigError
from ray_t2t.methods import Setup, get_method
from ray_t2t.models import is_encoder_decoder
from ray_t2t.tokenizer import PairTokenizer

from conftest import LOCAL_DATA, minimal_config, train_locally

pytestmark = pytest.mark.usefixtures("torch_one_thread")

WORDS = ["hello", "world", "cat", "generative", "a", "zebra"]
PHONES = ["HH AH L OW", "W ER L D", "K AE T", "JH EH N ER AH T IH V", "AH", "Z IY B R AH"]


@pytest.fixture(scope="module")
def tok():
    return PairTokenizer.build(WORDS, PHONES)


def built(tmp_path, tok, method: dict, student: dict | None = None):
    """(setup, method module, wrapper) for one method entry, as the loop builds it."""
    cfg = validate_config(
        minimal_config(tmp_path, methods=[method], models={"student": student or {"preset": "t5-tiny"}})
    )
    setup = Setup(cfg, cfg.methods[0], tok, seed=0)
    module = get_method(method["name"])
    if hasattr(module, "check"):
        module.check(cfg, cfg.methods[0])
    model = module.build(setup)
    setup.encoder_decoder = is_encoder_decoder(model)
    return setup, module, model.train()


def batch_for(setup, module):
    collate = getattr(module, "collate", None)
    sources, targets = setup.tokenizer.encode_sources(WORDS), setup.tokenizer.encode_targets(PHONES)
    if collate is None:
        from ray_t2t.methods import collate
    return collate(setup, sources, targets)


def grads(module) -> list:
    return [p.grad for p in module.parameters()]


def has_gradient(module) -> bool:
    return any(g is not None and bool(g.abs().sum() > 0) for g in grads(module))


def no_gradient(module) -> bool:
    return all(g is None for g in grads(module))


# ------------------------------------------------------------------------------------------- gan


@pytest.mark.parametrize("student", [{"preset": "t5-tiny"}, {"preset": "gpt2-tiny"}], ids=["t5", "gpt2"])
def test_gan_follows_the_step_ratio_and_trains_only_the_phase_part(tmp_path, tok, student):
    """mle_warmup 1, then cycles of 2 discriminator steps and 1 generator step: each loss() call's phase,
    counted; a discriminator step puts gradients on the discriminator only, a generator step on the
    generator only."""
    from ray_t2t.methods.gan import PHASES

    torch.manual_seed(0)
    method = {"name": "gan", "d_steps": 2, "g_steps": 1, "mle_warmup_steps": 1}
    setup, gan, model = built(tmp_path, tok, method, student)
    # one AdamW over both players, as the loop's engine has (ZeRO 0, fp32: gradients set to None after a step)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    seen = []
    for _ in range(7):
        optimizer.zero_grad(set_to_none=True)
        before = model.phase_counts.clone()
        loss, stats = gan.loss(model, batch_for(setup, gan), setup)
        assert loss.dim() == 0 and torch.isfinite(loss)
        loss.backward()
        phase = PHASES[int((model.phase_counts - before).argmax())]
        seen.append(phase)
        if phase == "discriminator":
            assert has_gradient(model.discriminator) and no_gradient(model.task_model)
            assert set(stats) == {"disc_accuracy", "disc_loss"} and 0 <= float(stats["disc_accuracy"]) <= 1
        else:
            assert has_gradient(model.task_model) and no_gradient(model.discriminator)
        idle = model.task_model if phase == "discriminator" else model.discriminator
        idle_before = [p.detach().clone() for p in idle.parameters()]
        optimizer.step()  # the idle player does not move, although AdamW has moments for it from earlier steps
        assert all(torch.equal(a, b) for a, b in zip(idle_before, idle.parameters()))
        if phase == "generator":
            assert set(stats) == {"gen_reward", "gen_mle"} and 0 < float(stats["gen_reward"]) < 1
    assert seen == ["mle", "discriminator", "discriminator", "generator", "discriminator", "discriminator", "generator"]
    assert model.phase_counts.tolist() == [1, 4, 2]
    assert int(model.loss_calls) == 7


def test_gan_phases_follow_optimizer_steps_under_accumulation(tmp_path, tok):
    from ray_t2t.methods.gan import phase_of

    params = validate_config(minimal_config(tmp_path, methods=[{"name": "gan", "d_steps": 1, "g_steps": 3}])).methods[0]
    assert [phase_of(s, params) for s in range(6)] == [
        "discriminator",
        "generator",
        "generator",
        "generator",
        "discriminator",
        "generator",
    ]
    raw = minimal_config(tmp_path, methods=[{"name": "gan"}], deepspeed={"gradient_accumulation_steps": 2})
    cfg = validate_config(raw)
    setup = Setup(cfg, cfg.methods[0], tok, seed=0)
    model = get_method("gan").build(setup)
    assert [model.optimizer_step(2) for _ in range(5)] == [0, 0, 1, 1, 2]  # micro-steps share their step


def test_gan_reward_baseline_is_a_moving_average(tmp_path, tok):
    torch.manual_seed(1)
    setup, gan, model = built(
        tmp_path, tok, {"name": "gan", "d_steps": 1, "g_steps": 1, "baseline_decay": 0.5, "mle_weight": 0.0}
    )
    batch = batch_for(setup, gan)
    rewards = []
    for _ in range(4):  # D, G, D, G
        _, stats = gan.loss(model, batch, setup)
        if "gen_reward" in stats:
            rewards.append(float(stats["gen_reward"]))
    first, second = rewards
    # started at the first mean reward, then 0.5 x old + 0.5 x new
    assert float(model.reward_baseline) == pytest.approx(0.5 * first + 0.5 * second, rel=1e-5)


def test_gan_config_refuses_bad_parameters(tmp_path):
    for entry, key in [
        ({"name": "gan", "mle_weight": 1.0}, "methods.0.gan.mle_weight"),
        ({"name": "gan", "d_steps": 0}, "methods.0.gan.d_steps"),
        ({"name": "gan", "disc_dim": 30}, "methods.0.gan.disc_dim"),
        ({"name": "gan", "model": "teacher"}, "methods.0.gan.model"),
        ({"name": "vae", "free_bits": -1}, "methods.0.vae.free_bits"),
        ({"name": "vae", "latent_dim": 0}, "methods.0.vae.latent_dim"),
    ]:
        with pytest.raises(ConfigError, match=key):
            validate_config(minimal_config(tmp_path, methods=[entry]))


def test_gan_export_is_the_generator_alone(tmp_path, tok):
    from transformers import AutoModelForSeq2SeqLM

    setup, gan, model = built(tmp_path, tok, {"name": "gan"})
    gan.export(model, tmp_path / "export", setup)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "export")
    ours = model.task_model.state_dict()
    assert set(loaded.state_dict()) == set(ours)
    assert all(torch.equal(loaded.state_dict()[k], ours[k]) for k in ours)
    assert not any("discriminator" in k for k in loaded.state_dict())


# ------------------------------------------------------------------------------------------- vae


def test_vae_refuses_decoder_only_models(tmp_path, tok):
    cfg = validate_config(
        minimal_config(tmp_path, methods=[{"name": "vae"}], models={"student": {"preset": "gpt2-tiny"}})
    )
    with pytest.raises(
        ConfigError,
        match=r"methods.0.model: method 'vae' needs an encoder-decoder model .* "
        r"models.student is decoder-only \(gpt2\)",
    ):
        get_method("vae").check_config(cfg, cfg.methods[0])


@pytest.mark.parametrize("posterior", ["source_target", "target"])
def test_vae_loss_reaches_every_part(tmp_path, tok, posterior):
    torch.manual_seed(0)
    setup, vae, model = built(
        tmp_path, tok, {"name": "vae", "latent_dim": 4, "posterior": posterior, "kl_anneal_steps": 0, "free_bits": 0.0}
    )
    loss, stats = vae.loss(model, batch_for(setup, vae), setup)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert float(stats["kl"]) > 0 and stats["kl_weight"] == 1.0
    assert float(loss.detach()) == pytest.approx(float(stats["recon"]) + float(stats["kl"]), rel=1e-5)
    loss.backward()
    for part in (
        model.posterior_net,
        model.latent_to_states,
        model.task_model.get_encoder(),
        model.task_model.get_decoder(),
    ):
        assert has_gradient(part), part
    assert model.posterior_net.weight.shape[1] == (64 if posterior == "source_target" else 32)  # t5-tiny d 32


def test_vae_charges_the_encoders_pass_over_the_target(tmp_path, tok):
    from ray_t2t.models import training_flops_per_token

    setup, vae, model = built(tmp_path, tok, {"name": "vae", "latent_dim": 4})
    encoder_side, decoder_side = training_flops_per_token(model)
    assert encoder_side > 0 and vae.extra_flops_per_token(setup, model) == (0.0, encoder_side)


def test_vae_free_bits_keep_the_kl_term_positive(tmp_path, tok):
    """A posterior close to the prior (mu = 0.1, sigma = 1: KL 0.005 per dimension) is charged free_bits per
    dimension instead, and the floor is flat: the KL term puts no pull on the posterior (its gradient is the
    reconstruction's alone). Without free bits the KL is charged as it is and pulls mu towards 0."""
    from ray_t2t.methods.vae import objective

    setup, vae, model = built(tmp_path, tok, {"name": "vae", "latent_dim": 8, "free_bits": 0.25})
    with torch.no_grad():
        model.posterior_net.weight.zero_()
        model.posterior_net.bias.zero_()
        model.posterior_net.bias[:8] = 0.1  # mu = 0.1, logvar = 0
    model.eval()  # no dropout: the same eps gives the same computation
    batch = batch_for(setup, vae)

    def posterior_gradient(params, beta):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same eps, so the same z
        loss, stats = objective(model, batch, params, beta, tok.pad_id)
        loss.backward()
        return loss, stats, model.posterior_net.bias.grad.clone()

    loss, stats, with_floor = posterior_gradient(setup.params, 1.0)
    assert float(stats["kl"]) == pytest.approx(8 * 0.5 * 0.1**2, rel=1e-4)  # > 0, and under the floor
    assert float(loss - stats["recon"]) == pytest.approx(8 * 0.25)
    _, _, recon_alone = posterior_gradient(setup.params, 0.0)
    assert torch.allclose(with_floor, recon_alone, atol=1e-7)
    no_floor = setup.params.model_copy(update={"free_bits": 0.0})
    loss, stats, pulled = posterior_gradient(no_floor, 1.0)
    assert float(loss - stats["recon"]) == pytest.approx(8 * 0.005, rel=1e-4)
    assert torch.allclose(pulled[:8] - recon_alone[:8], torch.full((8,), 0.1), atol=1e-6)  # d KL / d mu = mu


def test_vae_kl_weight_anneals_linearly(tmp_path, tok):
    from ray_t2t.methods.vae import kl_weight

    params = validate_config(
        minimal_config(tmp_path, methods=[{"name": "vae", "kl_anneal_steps": 10, "kl_weight": 0.5}])
    ).methods[0]
    assert [kl_weight(s, params) for s in (0, 5, 10, 50)] == [0.0, 0.25, 0.5, 0.5]
    setup, vae, model = built(tmp_path, tok, {"name": "vae", "kl_anneal_steps": 4})
    batch = batch_for(setup, vae)
    assert [vae.loss(model, batch, setup)[1]["kl_weight"] for _ in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]


def test_vae_decodes_at_the_prior_mean_like_its_plain_export(tmp_path, tok):
    """z = prior mean = 0 gives exactly the plain encoder-decoder, which is what export() saves and what the
    loop's evaluation (forward, generate) runs."""
    from transformers import AutoModelForSeq2SeqLM

    from ray_t2t.decoding import generate_ids

    torch.manual_seed(0)
    setup, vae, model = built(tmp_path, tok, {"name": "vae", "latent_dim": 4})
    with torch.no_grad():
        model.latent_to_states.weight.normal_()  # a W that matters for any z != 0
    model.eval()
    batch = batch_for(setup, vae)
    with torch.no_grad():
        states = model.get_encoder()(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        at_prior_mean = model.decode(states, batch["attention_mask"], batch["labels"], torch.zeros(len(WORDS), 4))
        elsewhere = model.decode(states, batch["attention_mask"], batch["labels"], torch.ones(len(WORDS), 4))
    vae.export(model, tmp_path / "export", setup)
    plain = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "export").eval()
    assert not any("posterior" in k or "latent" in k for k in plain.state_dict())
    with torch.no_grad():
        exported = plain(**batch)
        through_wrapper = model(**batch)
    assert torch.allclose(at_prior_mean.logits, exported.logits, atol=1e-5)
    assert torch.allclose(through_wrapper.logits, exported.logits, atol=1e-5)
    assert not torch.allclose(elsewhere.logits, exported.logits, atol=1e-3)  # z is really injected
    sources = tok.encode_sources(WORDS)
    assert generate_ids(model, tok, sources, max_new_tokens=8) == generate_ids(plain, tok, sources, max_new_tokens=8)


# ------------------------------------------------------------------------- the shared loop, no Ray


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from ray_t2t.data import prepare_data

    folder = tmp_path_factory.mktemp("alternatives")
    raw = minimal_config(folder)
    raw["data"] = LOCAL_DATA
    raw["training"] = {"batch_size": 32, "max_steps": 40, "warmup_steps": 2, "learning_rate": 5e-3}
    raw["eval"] = {"every_n_steps": 20, "batch_size": 64}
    return folder, raw, prepare_data(validate_config(raw), log=lambda message: None)


def run_locally(prepared, method: dict) -> dict:
    folder, raw, data = prepared
    cfg = validate_config(dict(raw, methods=[method]))
    return train_locally(cfg, method["name"], data.path, folder / method["name"])


def assert_improves_its_task_metrics(record):
    curve = record["learning_curve"]
    first, last = curve[0], curve[-1]
    assert record["status"] == "finished" and last["step"] == record["steps"]["done"] == 40
    print(
        f"{record['method']}: "
        + "; ".join(
            f"step {p['step']}: "
            + ", ".join(
                f"{k} {v:.4g}"
                for k, v in p.items()
                if k.startswith(("val_loss", "val_token", "val_per", "train_")) and v is not None
            )
            for p in curve
        )
    )
    # 40 steps of t5-tiny: the loss and token accuracy move (PER needs hundreds of steps to leave 1.0)
    assert last["val_loss"] < 0.8 * first["val_loss"], curve
    assert last["val_token_accuracy"] > first["val_token_accuracy"] + 0.05, curve


def test_gan_run_of_the_shared_loop_improves_and_records_its_players(prepared):
    from transformers import AutoModelForSeq2SeqLM

    record = run_locally(prepared, {"name": "gan", "mle_weight": 0.5})
    assert_improves_its_task_metrics(record)
    for point in record["learning_curve"][1:]:
        assert 0 <= point["train_disc_accuracy"] <= 1 and 0 < point["train_gen_reward"] < 1, point
        assert point["train_loss"] is not None
    assert "train_disc_accuracy" not in record["learning_curve"][0]  # step 0: nothing trained yet
    model = AutoModelForSeq2SeqLM.from_pretrained(record["model"]["export_path"])
    # params describe the exported generator; the discriminator trained beside it is listed apart
    assert record["model"]["total_params"] == sum(p.numel() for p in model.parameters())
    assert record["model"]["training_only_params"] > 0


def test_vae_run_of_the_shared_loop_improves_and_records_its_kl(prepared):
    record = run_locally(prepared, {"name": "vae", "latent_dim": 8, "free_bits": 0.05, "kl_anneal_steps": 20})
    assert_improves_its_task_metrics(record)
    points = record["learning_curve"][1:]
    assert all(p["train_kl"] > 0 for p in points), points
    assert points[-1]["train_kl_weight"] == 1.0 and 0 < points[0]["train_kl_weight"] < 1


# -------------------------------------------------------------------------------- one run on Ray


@pytest.mark.ray
def test_gan_trains_through_ray(tmp_path):
    """The launcher's path: Ray Train + DeepSpeed, a run record with the players' statistics."""
    import ray

    from ray_t2t.ray_cluster import start_local_ray
    from ray_t2t.reporting import build_report
    from ray_t2t.training.launcher import train

    # a Ray of its own (start_local_ray never joins another one running on this machine)
    start_local_ray(
        {"env_vars": {"RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING": "0", "DS_ACCELERATOR": "cpu"}}, num_cpus=2
    )
    try:
        raw = minimal_config(tmp_path, methods=[{"name": "gan", "mle_weight": 0.4}])
        raw["data"] = {"split_sizes": {"train": 1000, "validation": 32, "test": 32}}
        # 40 steps: a log window of 2 steps, so each holds a discriminator and a generator step
        raw["training"] = {"batch_size": 32, "max_steps": 40, "warmup_steps": 2, "learning_rate": 5e-3}
        raw["eval"] = {"every_n_steps": 20, "batch_size": 64}
        cfg = validate_config(raw)
        record = train(cfg, "gan", log=lambda message: None)
    finally:
        ray.shutdown()
    build_report(cfg.experiment_dir, plots=False, formats=("md",))  # a row like every method's
    assert any(
        line.startswith("| gan |") for line in (cfg.experiment_dir / "report" / "report.md").read_text().splitlines()
    )
    assert record["method"] == "gan" and record["status"] == "finished" and record["steps"]["done"] == 40
    assert record["params"]["mle_weight"] == 0.4
    curve = record["learning_curve"]
    assert [p["step"] for p in curve] == [0, 20, 40]
    assert all("train_disc_accuracy" in p and "train_gen_reward" in p for p in curve[1:]), curve
    assert curve[-1]["val_loss"] < curve[0]["val_loss"]
    assert record["model"]["architecture_key"] and record["model"]["size_on_disk_bytes"] > 0
