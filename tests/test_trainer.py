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
        # 30 steps: warmup, then the decaying rate; exact equality needs no long run to show a drift
        trainer = Trainer(data, TrainConfig(steps=30, batch_size=16, warmup=5, prediction=prediction, fast=fast),
                          device="cpu", progress=False)
        summary = trainer.run()
        curves[fast] = [loss for _, loss in summary["loss_curve"]]
        weights[fast] = trainer.ema.state_dict()
        assert trainer.step == 30
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


class TickingClock:
    """time.perf_counter for the trainer: each reading is `tick` seconds after the previous one, so a wall-clock
    budget ends after the same steps on any machine."""

    def __init__(self, tick: float):
        self.now, self.tick = 1000.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def test_a_minutes_budget_decays_the_rate_as_a_steps_budget_does(digits_train, monkeypatch):
    """The cosine decay runs on whichever budget is further along: a fit given only minutes used to train at the
    peak rate to its last step (lr_at was flat without a step total)."""
    import diffaug
    import diffaug.diffusion.trainer as trainer_module
    from diffaug.diffusion.step import lr_at

    cfg = TrainConfig(lr=1e-3, warmup=10)
    step = torch.tensor(500.0, dtype=torch.float64)
    assert float(lr_at(step, cfg, None)) == pytest.approx(1e-3)   # no budget at all: flat after warm-up
    assert float(lr_at(step, cfg, None, torch.tensor(0.5, dtype=torch.float64))) == pytest.approx(0.55e-3)
    assert float(lr_at(step, cfg, 1000, torch.tensor(1.0, dtype=torch.float64))) == pytest.approx(0.1e-3)
    assert float(lr_at(step, cfg, 500, torch.tensor(0.0, dtype=torch.float64))) == pytest.approx(0.1e-3)
    few = digits_train.subset(per_class=5, seed=0)
    # a 60-second budget read by a clock that moves one second a reading (one reading a step): ~60 steps
    for budget in ({"minutes": 1.0}, {"minutes": 1.0, "steps": 10**6}):   # minutes alone; minutes ending first
        monkeypatch.setattr(trainer_module, "time", TickingClock(1.0))
        train = diffaug.fit(few, progress=False, batch_size=16, lr=1e-3, warmup=5, **budget).config["train"]
        assert 40 < train["steps"] < 70, train["steps"]
        assert train["lr_end"] == pytest.approx(0.1e-3, rel=0.01)   # the last step ran at the decayed rate


def test_a_resumed_minutes_budget_continues_the_same_clock(digits_train, tmp_path, monkeypatch):
    import diffaug.diffusion.trainer as trainer_module

    data = digits_train.subset(per_class=5, seed=0)
    cfg = TrainConfig(minutes=0.5, batch_size=8, warmup=5, checkpoint_every=10**6)
    monkeypatch.setattr(trainer_module, "time", TickingClock(1.0))
    first = Trainer(data, cfg, device="cpu", out_dir=tmp_path, progress=False)
    done = first.run()
    assert 20 < done["steps"] < 35 and done["seconds_all_runs"] >= 30
    again = Trainer(data, cfg, device="cpu", out_dir=tmp_path, progress=False)
    assert again.load_checkpoint() and again.elapsed == pytest.approx(done["seconds_all_runs"], abs=2)
    more = again.run()   # the budget is spent: one step (the loop reads the clock after a step), at the low rate
    assert more["steps_this_run"] == 1 and more["lr_end"] == pytest.approx(0.1 * cfg.lr, rel=0.01)


@pytest.mark.parametrize("sampling", ["importance"])   # lognormal: the same path (tests/test_diffusion.py)
def test_a_fit_draws_its_noise_levels_as_asked_on_both_steps_and_records_it(digits_train, sampling, tmp_path):
    """The drawn noise levels go through the loss both steps share: the graph-safe and the eager step stay equal
    bit for bit; the choice is in the generator's record and survives a save."""
    import diffaug
    data = digits_train.subset(per_class=5, seed=0)
    weights = {}
    for fast in (False, True):
        trainer = Trainer(data, TrainConfig(steps=10, batch_size=16, warmup=2, noise_sampling=sampling, fast=fast),
                          device="cpu", progress=False)
        trainer.run()
        weights[fast] = trainer.ema.state_dict()
    for name, w in weights[False].items():
        assert torch.equal(weights[True][name], w), name
    plain = Trainer(data, TrainConfig(steps=10, batch_size=16, warmup=2), device="cpu", progress=False)
    plain.run()   # the same seed and batches, the default draw: other noise levels, other weights
    assert any(not torch.equal(plain.ema.state_dict()[name], w) for name, w in weights[True].items())
    gen = diffaug.fit(data, steps=3, batch_size=16, noise_sampling=sampling, progress=False)
    gen.save(tmp_path / "g.safetensors")
    assert diffaug.Generator.load(tmp_path / "g.safetensors").config["train"]["noise_sampling"] == sampling


def test_a_resume_with_other_training_settings_is_refused_by_name_and_a_longer_budget_is_not(digits_train, tmp_path):
    """Resuming continues the same fit: a checkpoint made at one learning rate (or seed, batch, schedule...) is not
    spliced onto another; the refusal names what changed and leaves the checkpoint as it was. Extending the budget
    is what resume is for, and goes on from the checkpoint's step."""
    import diffaug
    from diffaug.diffusion.trainer import CHECKPOINT, TrainingError

    data = digits_train.subset(per_class=5, seed=0)
    cfg = dict(batch_size=8, warmup=2, checkpoint_every=2, progress=False, out_dir=tmp_path)
    diffaug.fit(data, steps=2, **cfg)
    saved = (tmp_path / CHECKPOINT).read_bytes()
    for changed, shown in (({"lr": 1e-3}, "lr: 0.002 -> 0.001"), ({"seed": 1}, "seed: 0 -> 1"),
                           ({"batch_size": 16}, "batch_size: 8 -> 16"),
                           ({"preset": "small"}, "preset: 'tiny' -> 'small'")):
        with pytest.raises(TrainingError, match="other training settings") as e:
            diffaug.fit(data, steps=4, resume=True, **{**cfg, **changed})
        assert shown in str(e.value)
        assert (tmp_path / CHECKPOINT).read_bytes() == saved
    longer = diffaug.fit(data, steps=4, resume=True, **cfg).config["train"]
    assert longer["steps"] == 4 and longer["steps_this_run"] == 2
