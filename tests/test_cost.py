"""The cost an evaluation prints before it starts: its arithmetic on given step times, and the line itself."""

import pytest

import diffaug
from diffaug.evaluation import EvalConfig
from diffaug.evaluation.cost import describe, estimate

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
    # a unit's arms: 5 trained (the second dose control shares the first's batches), 500 steps each
    arms = 5 * 500 * (0.01 + 0.002)
    assert two["seconds"]["units"] > arms and "up to" in describe(two) and "smallcnn(width=64)" in describe(two)


def test_evaluate_says_what_it_will_cost_before_it_starts(digits_train, digits_test, capsys):
    diffaug.evaluate(digits_train, digits_test, per_class=(3,), seeds=1, gen_steps=5, gen_batch_size=16,
                     classifier_steps=5, batch_size=16, synthetic_per_class=2, perturb_copies=1, sample_steps=2,
                     classical="crop", metrics=False, progress=True)
    err = capsys.readouterr().err
    assert "estimated cost on this machine" in err and "1 units over" in err
    assert err.index("estimated cost") < err.rindex("evaluate")   # before the units' progress bar
