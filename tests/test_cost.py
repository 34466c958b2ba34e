"""The cost an evaluation prints before it starts: its arithmetic on given step times, and the line itself."""

import pytest

import diffaug
from diffaug.evaluation import EvalConfig
from diffaug.evaluation.cost import after_choices, describe, describe_after_choices, estimate

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


def test_evaluate_says_what_it_will_cost_before_it_starts_and_again_once_it_has_chosen(digits_train, digits_test,
                                                                                        capsys):
    diffaug.evaluate(digits_train, digits_test, per_class=(3,), seeds=1, gen_steps=5, gen_batch_size=16,
                     classifier_steps=5, batch_size=16, synthetic_per_class=2, perturb_copies=1, sample_steps=2,
                     classifier_menu=("smallcnn", "smallcnn(width=32)"), metrics=False, progress=True)
    err = capsys.readouterr().err
    assert "estimated cost on this machine" in err and "1 units over" in err
    assert err.index("estimated cost") < err.index("with the networks chosen (3/class smallcnn")
    assert err.index("with the networks chosen") < err.rindex("evaluate")   # before the units' progress bar
