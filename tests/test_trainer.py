"""The fit loop: resume is bit-identical to an uninterrupted run; the fast (graph-safe) step matches the eager one."""

import pytest
import torch

from diffaug.diffusion.trainer import TrainConfig, Trainer


def _weights(trainer):
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_resume_is_bit_identical_even_with_dropout(digits_train, tmp_path):
    # `small` has dropout 0.1: its masks must come from the checkpointed RNG state, not a fresh global one.
    data = digits_train.subset(per_class=5, seed=0)
    cfg = dict(preset="small", steps=4, batch_size=8, warmup=2, checkpoint_every=2)
    whole = Trainer(data, TrainConfig(**cfg), device="cpu", progress=False)
    whole.run()

    first = Trainer(data, TrainConfig(**cfg), device="cpu", out_dir=tmp_path, progress=False)
    for _ in range(2):
        first.train_step()
    first.save_checkpoint()
    torch.manual_seed(12345)   # whatever the process did in between must not matter
    torch.rand(100)
    second = Trainer(data, TrainConfig(**cfg), device="cpu", out_dir=tmp_path, progress=False)
    assert second.load_checkpoint()
    second.run()
    for name, w in _weights(whole).items():
        assert torch.equal(w, second.model.state_dict()[name]), name


@pytest.mark.parametrize("prediction", ["v", "eps"])
def test_fast_step_follows_the_eager_reference_exactly(digits_train, prediction):
    """The graph-safe step (device-side LR, EMA decay and loss sum) and the eager step do the same operations in
    the same order on the CPU (diffusion/step.py: the LR and EMA decay from one float64 step counter, gradients
    set to None before backward, the same EMA update), so their losses and weights are equal bit for bit.

    (They used to compute the LR in float32 vs float64 and the EMA by two formulas; the rounding apart grew over
    75 steps past rtol 1e-3 for `eps` on some machines, which made this test pass on one machine and fail on
    another. Exact equality has no tolerance to outgrow.)"""
    data = digits_train.subset(per_class=10, seed=0)
    curves, weights = {}, {}
    for fast in (False, True):
        trainer = Trainer(data, TrainConfig(steps=75, batch_size=16, warmup=5, prediction=prediction, fast=fast),
                          device="cpu", progress=False)
        summary = trainer.run()
        curves[fast] = [loss for _, loss in summary["loss_curve"]]
        weights[fast] = trainer.ema.state_dict()
        assert trainer.step == 75
    assert len(curves[True]) == len(curves[False]) > 0
    assert curves[True] == curves[False]
    for name, w in weights[False].items():
        assert torch.equal(weights[True][name], w), name


def test_compile_by_default_only_where_it_pays(digits_train):
    """compile=None (the default) compiles on CUDA for fits past the measured break-even, never on the CPU; an
    explicit True/False wins; anything else is refused by name."""
    from diffaug.diffusion.step import COMPILE_PAYS_FROM_SECONDS, COMPILE_PAYS_FROM_STEPS, compile_pays
    from diffaug.errors import DiffaugError

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert compile_pays(cuda, COMPILE_PAYS_FROM_STEPS, None)
    assert not compile_pays(cuda, COMPILE_PAYS_FROM_STEPS - 1, None)
    assert not compile_pays(cpu, 10 ** 6, None)
    assert compile_pays(cuda, None, COMPILE_PAYS_FROM_SECONDS / 60)            # a minutes budget alone
    assert not compile_pays(cuda, None, COMPILE_PAYS_FROM_SECONDS / 120)
    assert not compile_pays(cuda, 10 ** 6, 1.0)                                # stops at the 1-minute budget first
    data = digits_train.subset(per_class=2, seed=0)
    default = Trainer(data, TrainConfig(steps=COMPILE_PAYS_FROM_STEPS, batch_size=8), device="cpu", progress=False)
    assert not default.compiled and default.forward is default.model
    asked = Trainer(data, TrainConfig(steps=2, batch_size=8, compile=True), device="cpu", progress=False)
    assert asked.compiled and asked.forward is not asked.model
    with pytest.raises(DiffaugError, match="compile must be True, False or None"):
        TrainConfig(compile="yes")
