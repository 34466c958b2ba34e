"""The cost an evaluation prints before it starts: its arithmetic on given step times, and the line itself."""

import pytest
import torch

import diffaug
from diffaug.classify.networks import SmallCNN
from diffaug.classify.semi import self_train
from diffaug.evaluation import EvalConfig
from diffaug.evaluation.config import FIXMATCH, SELF_TRAINING
from diffaug.evaluation.cost import after_choices, describe, describe_after_choices, estimate, step_passes

STEPS = {"classifier": {"smallcnn": 0.01, "smallcnn(width=64)": 0.05}, "generator": 0.1, "augment": 0.002}


def test_the_estimate_counts_the_work_the_run_schedules(digits_train):
    cfg = EvalConfig(per_class=(10,), seeds=4)
    menu = ("smallcnn", "smallcnn(width=64)")
    two = estimate(digits_train, cfg, [(10, 0), (10, 1)], menu, [10], 2, 1, timings=STEPS)
    four = estimate(digits_train, cfg, [(10, s) for s in range(4)], menu, [10], 2, 1, timings=STEPS)
    assert four["seconds"]["units"] == pytest.approx(2 * two["seconds"]["units"])   # two waves of two units
    assert four["seconds"]["classical choice"] == two["seconds"]["classical choice"] > 0   # once per regime
    cached = estimate(digits_train, cfg, [(10, 0), (10, 1)], menu, [], 2, 1, timings=STEPS)
    assert cached["seconds"]["classical choice"] == cached["seconds"]["network choice"] == 0   # a cached choice
    one = estimate(digits_train, cfg, [(10, 0), (10, 1)], menu, [10], 1, 2, timings=STEPS)
    assert one["total"] == pytest.approx(2 * two["total"])   # one process does the work of two, one after the other
    assert two["total_widest"] > two["total"]   # every unit at width 64 costs more
    # the network choice's walk always scores the menu's second entry; a third only where the widest is chosen
    three = estimate(digits_train, cfg, [(10, 0), (10, 1)], (*menu[:1], "smallcnn(width=32)", menu[1]), [10], 2, 1,
                     timings={**STEPS, "classifier": {**STEPS["classifier"], "smallcnn(width=32)": 0.02}})
    assert three["seconds"]["network choice"] < two["seconds"]["network choice"]   # width 32's fits, not 64's
    assert three["total_widest"] - three["seconds"]["units (widest network)"] > \
        two["total_widest"] - two["seconds"]["units (widest network)"]   # 32 and 64 both scored
    # a unit's arms: 5 trained (the second dose control shares the first's batches), the regime's steps each
    arms = 5 * cfg.steps_for(100) * (0.01 + 0.002)
    assert two["seconds"]["units"] > arms and "up to" in describe(two) and "smallcnn(width=64)" in describe(two)


def test_once_the_networks_are_chosen_each_regimes_units_are_forecast_at_its_own(digits_train):
    """The first estimate can only bracket the units between the menu's first and widest networks; after the
    choices each regime's units are counted at the network it chose."""
    cfg = EvalConfig(per_class=(10, 50), seeds=2)
    menu = ("smallcnn", "smallcnn(width=64)")
    todo = [(k, seed) for k in (10, 50) for seed in range(2)]
    forecast = after_choices(digits_train, cfg, todo, {10: menu[1], 50: menu[0]}, 2, 1, STEPS)
    wide = estimate(digits_train, cfg, todo[:2], menu[1:], [], 2, 1, timings=STEPS)["seconds"]["units"]
    narrow = estimate(digits_train, cfg, todo[2:], menu[:1], [], 2, 1, timings=STEPS)["seconds"]["units"]
    assert forecast["per_regime"] == pytest.approx({10: wide, 50: narrow})
    assert forecast["units"] == pytest.approx(wide + narrow)
    first = estimate(digits_train, cfg, todo, menu, [], 2, 1, timings=STEPS)["seconds"]
    assert first["units"] < forecast["units"] < first["units (widest network)"]
    assert "10/class smallcnn(width=64), 50/class smallcnn" in describe_after_choices(forecast)
    done = after_choices(digits_train, cfg, todo[2:], {10: menu[1], 50: menu[0]}, 2, 1, STEPS)   # 10's units cached
    assert list(done["per_regime"]) == [50] and done["units"] == pytest.approx(narrow)


def test_a_semi_supervised_step_costs_the_rows_its_learner_puts_through_the_network(digits_train):
    """The estimate's count of a FixMatch or self-training step against the rows the learner's network really sees
    (a forward without backward counted as 1/3 of a row, as the estimate counts it)."""
    rows = {True: 0, False: 0}   # rows through the network with and without autograd

    def count(module, args):
        rows[torch.is_grad_enabled()] += len(args[0])

    def counting(channels, classes):
        model = SmallCNN(channels, classes)
        model.register_forward_pre_hook(count)
        return model

    labelled, unlabeled = digits_train.subset(per_class=2, seed=0), digits_train.images[:50]
    cfg = EvalConfig(per_class=(2,), unlabeled="rest", batch_size=8, fixmatch_ratio=3, self_training_rounds=2)
    steps, batches = 4, 4 * cfg.batch_size

    cfg.fixmatch.train(labelled, unlabeled, (0, 1), steps, cfg.batch_size, "cpu", factory=counting)
    assert rows[False] == 0 and rows[True] == 7 * batches   # 8 labelled + 3 x 8 unlabelled in two views, a step
    assert step_passes(cfg, FIXMATCH, steps, len(unlabeled)) == rows[True] / batches

    teacher = counting(labelled.channels, labelled.num_classes)
    rows.update({True: 0, False: 0})
    self_train(labelled, unlabeled, teacher, None, (0, 1), steps, cfg.batch_size, "cpu", threshold=0.0,
               rounds=cfg.self_training_rounds, factory=counting)
    assert rows == {True: 2 * batches, False: 2 * len(unlabeled)}   # two students; each round labels the pool
    assert step_passes(cfg, SELF_TRAINING, steps, len(unlabeled)) == pytest.approx(
        (rows[True] + rows[False] / 3) / batches)
    assert step_passes(cfg, None, steps, len(unlabeled)) == 1.0


def test_evaluate_says_what_it_will_cost_before_it_starts_and_again_once_it_has_chosen(digits_train, digits_test,
                                                                                        capsys):
    diffaug.evaluate(digits_train, digits_test, per_class=(3,), seeds=1, gen_steps=5, gen_batch_size=16,
                     classifier_steps=5, batch_size=16, synthetic_per_class=2, perturb_copies=1, sample_steps=2,
                     classifier_menu=("smallcnn", "smallcnn(width=32)"), metrics=False, progress=True)
    err = capsys.readouterr().err
    assert "estimated cost on this machine" in err and "1 units over" in err
    assert err.index("estimated cost") < err.index("with the networks chosen (3/class smallcnn")
    assert err.index("with the networks chosen") < err.rindex("evaluate")   # before the units' progress bar


def test_with_unlabelled_images_a_units_generator_is_counted_at_the_rows_it_fits(digits_train):
    """With unlabelled images a unit's generator is fine-tuned on its labelled images plus every unlabelled one
    the labeller is confident of (most of the pool), and each seed fits a pool generator on the whole pool: both
    are counted at the pool's rows. The estimate counted the unit's fit at its labelled subset's (250 steps where
    a Fashion-MNIST unit fits 2,000)."""
    cfg = EvalConfig(per_class=(10,), seeds=1, unlabeled="rest", metrics=False)
    seconds = {t: estimate(digits_train, cfg, [(10, 0)], ("smallcnn",), [], 1, 1,
                           timings={**STEPS, "generator": t})["seconds"]["units"] for t in (0.1, 1.1)}
    generator_steps = seconds[1.1] - seconds[0.1]   # the units' seconds per second of a generator step
    pool_rows = cfg.gen_steps_for(len(digits_train))
    assert cfg.gen_steps_for(100) < pool_rows   # (the two counts differ on this data)
    assert generator_steps == pytest.approx(2 * pool_rows, rel=0.1)   # the pool generator's and the unit's


def test_a_resumed_run_is_counted_without_the_work_it_kept(digits_train):
    """Resumed, a unit killed part-way costs only the parts it has not kept, and a seed whose pool generator is
    fitted does not fit it again: the line a user reads before a resumed run is the time that run will take."""
    cfg = EvalConfig(per_class=(10,), seeds=1, unlabeled="rest", classical="auto", metrics=False,
                     arms=("classical", "self-training", "self-training+synthesize"))
    units = lambda **done: estimate(digits_train, cfg, [(10, 0)], ("smallcnn",), [], 1, 1, timings=STEPS,  # noqa
                                    **done)["seconds"]["units"]
    whole = units()
    arm = cfg.steps_for(len(digits_train)) * (0.01 + 0.002)   # the classical arm: one pass of augmented steps
    assert whole - units(kept={(10, 0): {"classical"}}) == pytest.approx(arm)
    assert units(kept={(10, 1): {"classical"}}) == whole   # another unit's parts
    assert whole - units(fitted={0}) == pytest.approx(0.1 * cfg.gen_steps_for(len(digits_train)))
    everything = {"selection", "pools", *cfg.arms}
    assert units(kept={(10, 0): everything}, fitted={0}) == 0.0   # nothing left but the report
