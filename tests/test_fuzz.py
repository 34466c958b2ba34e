"""Hypothesis at every public entry point (tests/fuzzing.py): a valid result or a diffaug error with a message.
A few dozen draws each here; benchmarks/fuzz.py runs 500 per entry point and commits the tally."""

import pytest

from fuzzing import TARGETS, Fixtures, run

EXAMPLES = {"fit": 15, "evaluate": 15, "cli": 20, "expand_dataset/perturb_dataset": 15, "SampleBank": 20}


@pytest.fixture(scope="module")
def fx():
    return Fixtures()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_bad_input_gets_a_diffaug_error(fx, name):
    run(name, fx, EXAMPLES.get(name, 40))
