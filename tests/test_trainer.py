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
def test_fast_step_follows_the_eager_reference(digits_train, prediction):
    """The graph-safe step (device-side LR, EMA decay and loss sum) traces the eager step's losses and weights.

    Tolerance: the two compute the LR in float32 vs float64 and sum losses in another order, so they part
    by rounding only (~1e-7 relative per step); 1e-4 on losses and 1e-3 on weights after 75 steps leaves
    room for that and fails on any real difference (a wrong LR step, a skipped EMA update, another batch)."""
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
    assert curves[True] == pytest.approx(curves[False], rel=1e-4)
    for name, w in weights[False].items():
        assert torch.allclose(weights[True][name], w, rtol=1e-3, atol=1e-5), name
