"""`evaluate --export`: the evaluated primary arm written as a recipe that trains the same classifier, gets the same
test images right, and builds the arm as a torchvision transform and an albumentations pipeline."""

import json
import runpy

import pytest
import torch

import diffaug
from diffaug.classify import predict_proba
from diffaug.cli import main
from diffaug.evaluation.metrics import pack_bits

ARGS = ["--per-class", "3", "--seeds", "1", "--gen-steps", "10", "--classifier-steps", "20", "--batch-size", "16",
        "--synthetic-per-class", "4", "--perturb-copies", "1", "--sample-steps", "2", "--classical", "crop",
        "--no-metrics", "--quiet"]


def test_the_exported_recipe_trains_the_evaluated_arms_classifier(tmp_path, digits_test, capsys):
    folder = tmp_path / "recipe"
    assert main(["evaluate", "digits", "--out", str(tmp_path / "report"), "--export", str(folder), *ARGS]) == 0
    result = json.loads((tmp_path / "report" / "results.json").read_text())
    unit = result["units"][0]
    recipe = json.loads((folder / "recipe.json").read_text())
    assert recipe["arm"] == result["config"]["primary"] == "classical+synthesize" and recipe["policy"] == "crop"
    assert recipe["share"] == 0.5 and recipe["seeds"] == unit["replicate_seeds"][0]
    assert recipe["generator_fingerprint"] == unit["generator"]["fingerprint"]   # the unit's generator, refitted
    header = (folder / "recipe.py").read_text().splitlines()[0]
    assert "classical+synthesize" in header and result["summary"]["3"]["primary"]["gain"]["verdict"] in header
    code = runpy.run_path(str(folder / "recipe.py"))   # as a module: its functions, not its command line
    threads = torch.get_num_threads()
    model = code["train"]()
    assert torch.get_num_threads() == threads   # the unit's thread count is set for the fit only
    right = predict_proba(model, digits_test.images).argmax(1) == digits_test.labels
    assert pack_bits(right) == unit["arms"]["classical+synthesize"]["correct"][0]   # the same test images right
    image, label = code["transform"]()(digits_test.images[0], int(digits_test.labels[0]))
    assert image.shape == (1, 8, 8) and label == int(digits_test.labels[0])
    A = pytest.importorskip("albumentations")
    pipe = A.load(str(folder / "pipeline.json"))
    out = pipe(image=digits_test.images[0].permute(1, 2, 0).numpy(), class_label=3)["image"]
    assert out.shape == (8, 8, 1)
    assert diffaug.SampleBank(folder / "bank").meta["synthetic_count"] == 40
    # an existing folder is never overwritten, and the refusal comes before any work
    assert main(["evaluate", "digits", "--out", str(tmp_path / "again"), "--export", str(folder), *ARGS]) == 2
    assert "already exists" in capsys.readouterr().err and not (tmp_path / "again").exists()


def test_an_arm_without_a_recipe_is_refused_before_any_work(tmp_path, digits_train, digits_test):
    with pytest.raises(diffaug.DataError, match="export writes recipes"):
        diffaug.evaluate(digits_train, digits_test, unlabeled="rest", per_class=(3,), seeds=1,
                         export=tmp_path / "recipe", progress=False)
