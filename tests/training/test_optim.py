"""Optimizers, clipping, the schedule and parameter groups against torch and transformers, then whole training
steps of a bert2bert model (untied and tie_encoder_decoder) against the same steps taken by torch."""
import json
import warnings

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import seq2seq
from seq2seq.core.autograd import Tensor
from seq2seq.core.backend import to_numpy
from seq2seq.training.optim import SGD, AdamW, LinearSchedule, clip_grad_norm_, param_groups
from oracle import batch, hf_bert2bert, in_dir, one_torch_thread, save_hf, torch, transformers  # noqa: F401

SHAPES = [(5, 7), (7,), (3, 4, 2), (6,)]
TOL = {"float32": dict(rtol=2e-6, atol=1e-7), "float64": dict(rtol=1e-12, atol=1e-14)}

# name -> (our class, torch class, constructor arguments; the second group overrides lr and weight decay)
OPTIMIZERS = {
    "sgd": (SGD, "SGD", dict(lr=0.1)),
    "sgd-momentum-wd": (SGD, "SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    "adamw": (AdamW, "AdamW", dict(lr=1e-2)),
    "adamw-betas-eps-wd": (AdamW, "AdamW", dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
}


def random_params(rng, dtype, xp):
    """Our tensors and torch's leaf tensors with equal values, in the awkward layouts ours must keep."""
    arrays = [rng.normal(size=s).astype(dtype) for s in SHAPES]
    ours = [Tensor(xp.asarray(a), requires_grad=True) for a in arrays]
    ours[0].data = xp.asfortranarray(ours[0].data)  # like the tied LM-head table (layers.lm_head_layout)
    ref = [torch.tensor(a, requires_grad=True) for a in arrays]
    return ours, ref


def set_grads(rng, ours, ref, xp, *, skip=()):
    """The same random gradients (spanning magnitudes) on both sides; parameters in ``skip`` get none."""
    for i, (p, q) in enumerate(zip(ours, ref)):
        if i in skip:
            p.grad, q.grad = None, None
            continue
        g = rng.normal(size=p.shape).astype(p.dtype) * float(10.0 ** rng.integers(-4, 2))
        p.grad, q.grad = xp.asarray(g), torch.tensor(g)


def groups(params, second):
    return [{"params": params[:2]}, {"params": params[2:], **second}]


# -- the pieces against torch ----------------------------------------------------------------------------------

@pytest.mark.oracle
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_matches_torch(name, dtype, xp, rng):
    ours_cls, torch_name, kwargs = OPTIMIZERS[name]
    ours, ref = random_params(rng, dtype, xp)
    second = {"lr": kwargs["lr"] / 4, "weight_decay": 0.05}
    opt = ours_cls(groups(ours, second), **kwargs)
    ref_opt = getattr(torch.optim, torch_name)(groups(ref, second), **kwargs)
    data_ids = [id(p.data) for p in ours]
    for step in range(6):
        set_grads(rng, ours, ref, xp, skip={3} if step < 2 else ())  # an unused parameter is skipped, then joins
        grads_before = [to_numpy(p.grad).copy() for p in ours if p.grad is not None]
        opt.step()
        ref_opt.step()
        for g, p in zip(grads_before, [p for p in ours if p.grad is not None]):
            np.testing.assert_array_equal(to_numpy(p.grad), g)  # step reads gradients, never writes them
    for p, q in zip(ours, ref):
        np.testing.assert_allclose(to_numpy(p.data), q.detach().numpy(), **TOL[dtype])
    assert [id(p.data) for p in ours] == data_ids  # updated in place ...
    assert ours[0].data.flags.f_contiguous  # ... keeping the layout


def test_zero_grad_sets_none(xp, rng):
    ours = [Tensor(xp.ones(3), requires_grad=True), Tensor(xp.ones((2, 2)), requires_grad=True)]
    opt = AdamW(ours)
    for p in ours:
        p.grad = xp.ones_like(p.data)
    opt.zero_grad()
    assert all(p.grad is None for p in ours)
    opt.step()  # nothing to do: no gradients
    assert not opt.state


def test_bad_arguments_raise():
    p = Tensor(np.zeros(2), requires_grad=True)
    with pytest.raises(ValueError, match="empty"):
        SGD([], lr=0.1)
    with pytest.raises(TypeError, match="single Tensor"):
        SGD(p, lr=0.1)
    with pytest.raises(ValueError, match="more than once"):
        AdamW([{"params": [p]}, {"params": [p]}])
    with pytest.raises(ValueError, match="lr"):
        AdamW([p], lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        AdamW([p], betas=(0.9, 1.0))


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("max_norm", [1e-3, 1.0, 1e4], ids=["clips", "clips-some", "below"])
def test_clip_grad_norm_matches_torch(max_norm, dtype, xp, rng):
    ours, ref = random_params(rng, dtype, xp)
    set_grads(rng, ours, ref, xp, skip={1})
    total = clip_grad_norm_(ours, max_norm)
    ref_total = torch.nn.utils.clip_grad_norm_(ref, max_norm)
    assert isinstance(total, float)
    assert total == pytest.approx(ref_total.item(), rel=TOL[dtype]["rtol"])
    for p, q in zip(ours, ref):
        if q.grad is None:
            assert p.grad is None
            continue
        np.testing.assert_allclose(to_numpy(p.grad), q.grad.numpy(), **TOL[dtype])
    assert clip_grad_norm_([Tensor(xp.ones(2))], 1.0) == 0.0  # no gradients at all


@pytest.mark.oracle
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf * 0, as in torch
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_clip_grad_norm_non_finite_like_torch(bad, xp, rng):
    ours, ref = random_params(rng, "float32", xp)
    set_grads(rng, ours, ref, xp)
    ours[1].grad[2], ref[1].grad[2] = bad, bad
    total, ref_total = clip_grad_norm_(ours, 1.0), torch.nn.utils.clip_grad_norm_(ref, 1.0).item()
    np.testing.assert_equal(total, ref_total)
    for p, q in zip(ours, ref):
        np.testing.assert_array_equal(to_numpy(p.grad), q.grad.numpy())  # NaN where torch has NaN


@pytest.mark.oracle
@pytest.mark.parametrize("warmup, total", [(0, 5), (1, 3), (3, 10), (4, 4)])
def test_linear_schedule_matches_transformers(warmup, total):
    p, q = Tensor(np.zeros(2), requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = AdamW([{"params": [p]}, {"params": [Tensor(np.zeros(1))], "lr": 5e-4}], lr=2e-3)
    ref_opt = torch.optim.AdamW([{"params": [q]}, {"params": [torch.zeros(1)], "lr": 5e-4}], lr=2e-3)
    sched = LinearSchedule(opt, warmup, total)
    ref_sched = transformers.get_linear_schedule_with_warmup(ref_opt, warmup, total)
    seen = []
    for _ in range(total + 2):  # past the end: stays at 0
        assert sched.get_last_lr() == ref_sched.get_last_lr()  # exactly: the same float operations
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in ref_opt.param_groups]
        seen.append(sched.get_last_lr()[0])
        ref_opt.step()
        sched.step()
        ref_sched.step()
    assert max(seen) <= 2e-3 and seen[0] == (2e-3 if warmup == 0 else 0.0) and seen[-1] == 0.0


# -- saving and resuming -----------------------------------------------------------------------------------------

def through_files(state, folder, name):
    """Save a state dict as a trainer would (arrays to safetensors, the rest to JSON) and read it back."""
    arrays = {f"{pos}.{key}": value for pos, entry in state.get("state", {}).items()
              for key, value in entry.items() if isinstance(value, np.ndarray)}
    rest = {**state, "state": {pos: {k: v for k, v in entry.items() if not isinstance(v, np.ndarray)}
                               for pos, entry in state.get("state", {}).items()}}
    if arrays:
        save_file(arrays, f"{folder}/{name}.safetensors")
    with open(f"{folder}/{name}.json", "w") as f:
        json.dump(rest, f)
    with open(f"{folder}/{name}.json") as f:
        loaded = json.load(f)  # integer keys come back as strings, tuples as lists
    for key, value in (load_file(f"{folder}/{name}.safetensors") if arrays else {}).items():
        pos, field = key.split(".", 1)
        loaded["state"][pos][field] = value
    return loaded


@pytest.mark.parametrize("name", ["sgd-momentum-wd", "adamw-betas-eps-wd"])
def test_state_dict_resumes_exactly(name, xp, rng, tmp_path):
    ours_cls, _, kwargs = OPTIMIZERS[name]
    params, _ = random_params(rng, "float32", xp)
    grads = [[xp.asarray(rng.normal(size=s).astype(np.float32)) for s in SHAPES] for _ in range(5)]

    def make(params):
        opt = ours_cls(groups(params, {"lr": kwargs["lr"] / 4, "weight_decay": 0.05}), **kwargs)
        return opt, LinearSchedule(opt, warmup_steps=2, total_steps=6)

    def run(opt, sched, params, steps):
        for step in steps:
            for p, g in zip(params, grads[step]):
                p.grad = None if (step == 0 and p.ndim == 3) else g  # one parameter without state at first
            opt.step()
            sched.step()

    opt, sched = make(params)
    run(opt, sched, params, range(3))
    saved_opt, saved_sched = through_files(opt.state_dict(), tmp_path, "optimizer"), sched.state_dict()
    lr_at_save = sched.get_last_lr()
    saved_params = [to_numpy(p.data).copy() for p in params]
    run(opt, sched, params, range(3, 5))

    fresh = [Tensor(xp.asarray(a), requires_grad=True) for a in saved_params]
    opt2, sched2 = make(fresh)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(json.loads(json.dumps(saved_sched)))
    assert sched2.get_last_lr() == lr_at_save
    run(opt2, sched2, fresh, range(3, 5))
    for p, q in zip(params, fresh):
        np.testing.assert_array_equal(to_numpy(q.data), to_numpy(p.data))  # bit for bit
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert opt2.param_groups[1]["lr"] == opt.param_groups[1]["lr"]


def adamw_after_one_step(xp):
    """A 3-element parameter and an AdamW that has taken one step on it (its state has moments)."""
    p = Tensor(xp.ones(3, dtype=xp.float32), requires_grad=True)
    opt = AdamW([p])
    p.grad = xp.ones(3, dtype=xp.float32)
    opt.step()
    return p, opt


def test_state_dict_is_a_snapshot(xp):
    p, opt = adamw_after_one_step(xp)
    state = opt.state_dict()
    assert set(state["state"]) == {0} and state["state"][0]["step"] == 1
    assert isinstance(state["state"][0]["exp_avg"], np.ndarray)
    before = state["state"][0]["exp_avg"].copy()
    opt.step()
    np.testing.assert_array_equal(state["state"][0]["exp_avg"], before)  # later steps leave the snapshot alone
    opt.load_state_dict(state)
    opt.step()
    np.testing.assert_array_equal(state["state"][0]["exp_avg"], before)  # and so does loading it
    with pytest.raises(ValueError, match="groups"):
        AdamW([p, Tensor(xp.ones(1), requires_grad=True)]).load_state_dict(state)


def test_loaded_moments_take_the_parameters_layout(xp, rng):
    table = xp.asfortranarray(xp.asarray(rng.normal(size=(7, 5)).astype(np.float32)))  # as the tied LM-head table
    p = Tensor(table, requires_grad=True)
    twin = Tensor(table.copy(order="F"), requires_grad=True)
    opt, opt2 = AdamW([p], lr=0.1), AdamW([twin], lr=0.1)
    p.grad = xp.asarray(rng.normal(size=(7, 5)).astype(np.float32))
    opt.step()
    twin.data[...] = p.data
    opt2.load_state_dict(opt.state_dict())  # saved moments are C-ordered NumPy copies
    state = opt2.state[id(twin)]
    assert state["exp_avg"].flags.f_contiguous and state["exp_avg_sq"].flags.f_contiguous
    for _ in range(2):
        p.grad = twin.grad = xp.asarray(rng.normal(size=(7, 5)).astype(np.float32))
        opt.step()
        opt2.step()
    np.testing.assert_array_equal(to_numpy(twin.data), to_numpy(p.data))


def test_loading_moments_of_another_shape_is_refused(xp):
    _, opt = adamw_after_one_step(xp)
    state = opt.state_dict()
    with pytest.raises(ValueError, match=r"'exp_avg' of parameter 0 has shape \(3,\), the parameter \(4,\)"):
        AdamW([Tensor(xp.ones(4, dtype=xp.float32), requires_grad=True)]).load_state_dict(state)


# -- parameter groups and gradient accumulation ------------------------------------------------------------------

@pytest.mark.oracle
def test_param_groups_follow_the_trainer_rule(tmp_path):
    hf = hf_bert2bert()
    ours = seq2seq.EncoderDecoderModel.from_pretrained(save_hf(hf, tmp_path))
    hf_names = {n for n, _ in hf.named_parameters()}
    decayed_by_trainer = set(transformers.Trainer.get_decay_parameter_names(None, hf))  # does not use self
    named = ours.named_parameters()
    assert {n for n, _ in named} <= hf_names
    decay, no_decay = param_groups(ours, 0.01)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.01, 0.0)
    by_id = {id(p): n for n, p in named}
    assert {by_id[id(p)] for p in decay["params"]} == decayed_by_trainer & {n for n, _ in named}
    assert len(decay["params"]) + len(no_decay["params"]) == len(named)
    assert "encoder.embeddings.word_embeddings.weight" in decayed_by_trainer  # embeddings decay, like matrices
    assert [len(g["params"]) for g in param_groups(named, 0.1)] == [len(decay["params"]), len(no_decay["params"])]


def test_gradient_accumulation_equals_the_combined_batch():
    """k micro-batches, each loss scaled by 1/k, then one step == one step on the whole batch (grads add up).

    The loss is a mean over labelled tokens, so the micro-batches hold equally many (no -100 labels here)."""
    enc = seq2seq.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=20, max_position_embeddings=24)
    config = seq2seq.EncoderDecoderConfig.from_encoder_decoder_configs(enc, enc, decoder_start_token_id=2,
                                                                       pad_token_id=0)
    rng = np.random.default_rng(1)
    ids, labels = rng.integers(3, 40, (4, 6)), rng.integers(3, 40, (4, 5))
    whole, split = (seq2seq.EncoderDecoderModel(config, seed=0, dtype="float64") for _ in range(2))
    opt_whole, opt_split = AdamW(param_groups(whole, 0.01)), AdamW(param_groups(split, 0.01))

    whole(ids, labels=labels).loss.backward()
    for rows in (slice(0, 2), slice(2, 4)):
        (split(ids[rows], labels=labels[rows]).loss * 0.5).backward()
    for (name, p), q in zip(whole.named_parameters(), split.parameters()):
        np.testing.assert_allclose(q.grad, p.grad, rtol=1e-10, atol=1e-13, err_msg=name)
    opt_whole.step()
    opt_split.step()
    for (name, p), q in zip(whole.named_parameters(), split.parameters()):
        np.testing.assert_allclose(q.data, p.data, rtol=1e-10, atol=1e-13, err_msg=name)


# -- whole training steps against torch --------------------------------------------------------------------------

VOCAB = 61  # oracle.bert_config's vocabulary


def tie_by_hand(hf):
    """Share the encoder's nn.Parameters with the decoder, as ``tie_encoder_decoder`` does here.

    transformers 5 ignores the flag, so: every ``decoder.bert.*`` module that also exists under ``encoder.*``
    (embeddings; each layer's attention, intermediate and output; not the cross-attention, which the encoder
    lacks) takes the encoder's parameters, and the LM head follows the now shared word embeddings. Returns the
    decoder keys that became aliases.
    """
    encoder_modules = dict(hf.encoder.named_modules())
    aliases = set()
    for name, module in hf.decoder.bert.named_modules():
        if not name or name not in encoder_modules:
            continue
        for pname, _ in list(module.named_parameters(recurse=False)):
            setattr(module, pname, getattr(encoder_modules[name], pname))
            aliases.add(f"decoder.bert.{name}.{pname}")
    hf.decoder.cls.predictions.decoder.weight = hf.encoder.embeddings.word_embeddings.weight
    return aliases


def model_pair(tmp_path, *, tied, dtype="float32"):
    """(transformers model, ours) with equal weights; ``tied``: encoder and decoder share their tensors."""
    hf = hf_bert2bert(spread=3.0)
    path = save_hf(hf, in_dir(tmp_path, "tied" if tied else "untied"))
    if tied:
        with open(f"{path}/config.json") as f:
            config = json.load(f)
        with open(f"{path}/config.json", "w") as f:
            json.dump({**config, "tie_encoder_decoder": True}, f)
        aliases = tie_by_hand(hf)
    ours = seq2seq.EncoderDecoderModel.from_pretrained(path, dtype=dtype)
    if tied:
        assert set(ours.store.aliases) == aliases
        assert hf.decoder.cls.predictions.decoder.weight is hf.encoder.embeddings.word_embeddings.weight
    if dtype == "float64":
        hf.double()
    assert {n for n, _ in ours.named_parameters()} == {n for n, _ in hf.named_parameters()} - {
        "encoder.pooler.dense.weight", "encoder.pooler.dense.bias"}  # the pooler: a buffer here, never trained
    return hf, ours


def backward_both(hf, ours, seed):
    ids, mask, labels = batch(VOCAB, seed=seed)  # padded sources, -100 label tails
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), labels=torch.tensor(labels)).loss.backward()
    ours(ids, attention_mask=mask, labels=labels).loss.backward()


def max_relative_error(hf, ours, *, floor, skip=()):
    """Every parameter within tolerance of torch's: returns the largest |ours - torch| / max(|torch|, floor)."""
    ref = dict(hf.named_parameters())
    worst = 0.0
    for name, p in ours.named_parameters():
        if name in skip:
            continue
        expected = ref[name].detach().numpy()
        err = np.abs(p.data - expected) / np.maximum(np.abs(expected), floor)
        worst = max(worst, float(err.max()))
        np.testing.assert_allclose(p.data, expected, rtol=1e-3, atol=1e-3 * floor, err_msg=name)
    return worst


@pytest.mark.oracle
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_sgd_step_matches_torch(tied, tmp_path):
    hf, ours = model_pair(tmp_path, tied=tied)
    ref_opt = torch.optim.SGD(hf.parameters(), lr=0.1)
    opt = SGD(ours.parameters(), lr=0.1)
    backward_both(hf, ours, seed=3)
    ref_opt.step()
    opt.step()
    assert max_relative_error(hf, ours, floor=1e-3) < 1e-3


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_adamw_clip_schedule_steps_match_torch(tied, dtype, tmp_path):
    """Three AdamW steps (lr 1e-3, weight decay 0.01 on the Trainer's groups), clipped to norm 1, warm-up 1 of 3.

    Why the attention key biases get an absolute tolerance in float32: their exact gradient is zero (softmax
    ignores a shift shared by all keys), and Adam divides by sqrt(v) + eps, so it turns the rounding noise of
    each implementation into an update of its own (a few percent of lr, in float32). In float64 the noise is far
    below eps and they agree like the rest.
    """
    hf, ours = model_pair(tmp_path, tied=tied, dtype=dtype)
    decayed = set(transformers.Trainer.get_decay_parameter_names(None, hf))
    named = list(hf.named_parameters())
    ref_opt = torch.optim.AdamW([{"params": [p for n, p in named if n in decayed], "weight_decay": 0.01},
                                 {"params": [p for n, p in named if n not in decayed], "weight_decay": 0.0}], lr=1e-3)
    ref_sched = transformers.get_linear_schedule_with_warmup(ref_opt, 1, 3)
    opt = AdamW(param_groups(ours, 0.01), lr=1e-3)
    sched = LinearSchedule(opt, warmup_steps=1, total_steps=3)
    for step in range(3):
        ref_opt.zero_grad()
        opt.zero_grad()
        backward_both(hf, ours, seed=10 + step)
        ref_norm = torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0).item()
        assert clip_grad_norm_(ours.parameters(), 1.0) == pytest.approx(ref_norm, rel=1e-4)
        ref_opt.step()
        opt.step()
        ref_sched.step()
        sched.step()
        assert sched.get_last_lr() == ref_sched.get_last_lr()
    noisy = {n for n, _ in ours.named_parameters() if n.endswith("self.key.bias")} if dtype == "float32" else set()
    assert max_relative_error(hf, ours, floor=1e-3 if dtype == "float32" else 1e-6, skip=noisy) < 1e-3
    ref = dict(hf.named_parameters())
    for name in noisy:
        np.testing.assert_allclose(dict(ours.named_parameters())[name].data, ref[name].detach().numpy(),
                                   rtol=0, atol=0.1 * 1e-3, err_msg=name)


def test_seq2seq_optim_is_reachable_after_import_seq2seq():
    """SPEC.md names ``seq2seq.optim.AdamW``: a user who wrote ``import seq2seq`` alone reaches it."""
    import seq2seq
    import seq2seq.training.optim
    assert seq2seq.optim.AdamW is seq2seq.training.optim.AdamW and seq2seq.optim.SGD is seq2seq.training.optim.SGD
    assert seq2seq.optim.clip_grad_norm_ is seq2seq.training.optim.clip_grad_norm_
