"""The batched, on-device classical baselines draw from torchvision's policies and apply torchvision's ops."""

from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from diffaug.classify.batched import BatchAugment

POLICY = {"trivialaugment": v2.TrivialAugmentWide, "randaugment": v2.RandAugment, "autoaugment": v2.AutoAugment}


def torchvision_draws(policy_cls, n=3000, size=(28, 28)):
    """(op, magnitude) pairs torchvision's own per-image transform applies, recorded from its op dispatcher."""
    policy = policy_cls()
    seen = []
    original = policy._apply_image_or_video_transform

    def record(image, transform_id, magnitude, *args, **kwargs):
        seen.append((transform_id, round(float(magnitude), 4)))
        return original(image, transform_id, magnitude, *args, **kwargs)
    policy._apply_image_or_video_transform = record
    torch.manual_seed(0)
    image = torch.zeros(1, *size, dtype=torch.uint8)
    for _ in range(n):
        policy(image)
    return seen


def batched_draws(name, n=3000, size=(28, 28)):
    aug = BatchAugment(name, size)
    slots = aug.draw(n, torch.Generator().manual_seed(0))
    return [(op, round(float(m), 4)) for names, mags in slots for op, m in zip(names, mags)]


@pytest.mark.parametrize("name", sorted(POLICY))
def test_batched_policy_draws_torchvisions_ops_and_magnitudes(name):
    ours, theirs = batched_draws(name), torchvision_draws(POLICY[name])
    if name == "autoaugment":   # torchvision skips ops whose probability draw fails; ours records them as Identity
        ours = [d for d in ours if d[0] != "Identity"]
    ours_ops, their_ops = Counter(op for op, _ in ours), Counter(op for op, _ in theirs)
    assert set(ours_ops) == set(their_ops)
    space = BatchAugment(name, (28, 28)).space
    for op in their_ops:   # same frequencies, within sampling noise (3000 draws, ~14 ops: ~5 sigma is 0.035)
        assert ours_ops[op] / len(ours) == pytest.approx(their_ops[op] / len(theirs), abs=0.035), op
        values, signed = space[op]
        allowed = {0.0} if values is None or values.ndim == 0 else {round(float(v), 4) for v in values}
        allowed |= {-v for v in allowed} if signed else set()
        ours_mags = [m for o, m in ours if o == op]
        their_mags = [m for o, m in theirs if o == op]
        assert set(ours_mags) <= allowed and set(their_mags) <= allowed, op   # only torchvision's bins
        spread = max(abs(v) for v in allowed) or 1.0   # and spread over them alike
        mean_abs = lambda ms: sum(abs(m) for m in ms) / len(ms)   # noqa: E731
        assert mean_abs(ours_mags) == pytest.approx(mean_abs(their_mags), abs=0.15 * spread), op
        if signed and values.ndim > 0:
            assert min(ours_mags) < 0 < max(ours_mags), op


def digit_batch(digits_train, n=32, size=28):
    x = F.interpolate(digits_train.images[:n].float(), size=(size, size), mode="bilinear")
    return x.round().clamp(0, 255).to(torch.uint8).repeat(1, 3, 1, 1)   # RGB, so colour ops do something


# (op, magnitude, allowed mean absolute difference in uint8 levels): geometric ops resample with nearest
# neighbours about a centre that torchvision and kornia place half a pixel apart, so a few edge pixels move.
OP_CASES = [("Identity", 0.0, 0.0), ("Brightness", 0.5, 0.6), ("Brightness", -0.4, 0.6), ("Color", 0.7, 1.0),
            ("Contrast", 0.6, 1.0), ("Contrast", -0.5, 1.0), ("Sharpness", 0.8, 2.0), ("Posterize", 3.0, 0.0),
            ("Solarize", 0.5, 0.6), ("AutoContrast", 0.0, 0.6), ("Equalize", 0.0, 0.6), ("TranslateX", 5.0, 0.0),
            ("TranslateY", -4.0, 0.0), ("Rotate", 20.0, 6.0), ("ShearX", 0.3, 6.0), ("ShearY", -0.2, 6.0)]


@pytest.mark.parametrize("op,magnitude,tolerance", OP_CASES)
def test_each_batched_op_matches_torchvisions(digits_train, op, magnitude, tolerance):
    x = digit_batch(digits_train)
    tv = v2.TrivialAugmentWide()
    expected = torch.stack([tv._apply_image_or_video_transform(img, op, magnitude, v2.InterpolationMode.NEAREST,
                                                               {}) for img in x])
    aug = BatchAugment("trivialaugment", (28, 28))
    got = aug.apply(x, [([op] * len(x), torch.full((len(x),), magnitude))], torch.zeros(len(x), 2), None)
    diff = (got.float() - expected.float()).abs().mean().item()
    assert diff <= tolerance, f"{op}({magnitude}): mean |diff| {diff:.2f} uint8 levels"
    if op != "Identity":   # and it did something
        assert not torch.equal(got, x) or torch.equal(expected, x)


def test_crop_shift_is_torchvisions_padded_random_crop(digits_train):
    x = digit_batch(digits_train, n=4)
    aug = BatchAugment("crop", (28, 28))
    shifts = torch.tensor([[2.0, -3.0], [-3.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    got = aug.apply(x, [], shifts, None)
    padded = F.pad(x, (3, 3, 3, 3))
    for img, (dx, dy), out in zip(padded, shifts.long().tolist(), got):   # crop origin = pad - shift
        assert torch.equal(out, img[:, 3 - dy:3 - dy + 28, 3 - dx:3 - dx + 28])


def test_batches_get_independent_draws_and_a_seed_reproduces_them(digits_train):
    x = digit_batch(digits_train, n=64)
    aug = BatchAugment("trivialaugment", (28, 28))
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == x.shape
    same_as_first = [torch.equal(a[i] - x[i], a[0] - x[0]) for i in range(1, 64)]
    assert not all(same_as_first)   # per-image randomness, not one draw for the batch
    assert not torch.equal(a, aug(x, torch.Generator().manual_seed(2)))


def test_successive_halving_keeps_the_full_choices_scores_for_its_finalists(digits_train):
    from diffaug.classify.policies import MENU, select

    pool = digits_train.subset(per_class=12, seed=0)
    full = select(pool, 0, 20, 64, False, "cpu")
    halved = select(pool, 0, 20, 64, False, "cpu", survivors=3)
    first = sorted(MENU, key=lambda p: (-full["per_fold"][p.label][0], MENU.index(p)))[:3]
    assert sorted(halved["finalists"]) == sorted(p.label for p in first)
    for label, scores in halved["per_fold"].items():   # the same fits: the same scores, the finalists' on every fold
        assert scores == (full["per_fold"][label] if label in halved["finalists"] else full["per_fold"][label][:1])
    assert halved["winner"] == max(halved["finalists"], key=lambda m: (full["mean"][m], -full["menu"].index(m)))
    assert "the best 3 on the other two" in halved["rule"] and "halving" not in full["rule"]   # says what ran


def test_a_wider_network_must_win_by_more_than_the_validation_images_can_tell():
    """Three fold means can agree by chance to a tenth of a point (digits, 10 per class: 0.11 points, one image in
    898); the one-standard-error rule then bought width 64, 10x the fits of width 16, for two images."""
    from diffaug.classify.policies import network_winner

    per_fold = {"smallcnn": [0.9521, 0.9510, 0.9532], "smallcnn(width=64)": [0.9543, 0.9535, 0.9551]}
    assert network_winner(per_fold)["winner"] == "smallcnn(width=64)"   # the fold means' spread alone
    floored = network_winner(per_fold, n_val=898)
    assert floored["winner"] == "smallcnn" and floored["best"] == "smallcnn(width=64)"
    assert floored["se"] == pytest.approx(np.sqrt(0.9543 * 0.0457 / 898)) and floored["fold_se"] < floored["se"]
    clear = {"smallcnn": [0.90, 0.91, 0.905], "smallcnn(width=64)": [0.95, 0.955, 0.945]}   # a real difference
    assert network_winner(clear, n_val=898)["winner"] == "smallcnn(width=64)"
    assert network_winner(clear, n_val=60000)["winner"] == "smallcnn(width=64)"


def test_the_network_walk_stops_at_the_first_entry_that_does_not_beat_the_ones_before(digits_train):
    """The menu is walked cheapest first; an entry no better than the earlier ones by more than the error ends the
    walk, and the wider entries (the costliest fits) are not scored."""
    from diffaug.classify.policies import Policy, select_classifier

    pool = digits_train.subset(per_class=20, seed=0)
    menu = ("smallcnn(width=8)", "smallcnn(width=1)", "smallcnn(width=16)")   # one channel: near chance
    choice = select_classifier(pool, 5, Policy.parse("crop"), menu, 40, 32, False, "cpu")
    assert list(choice["per_fold"]) == list(menu[:2]) and choice["not_scored"] == [menu[2]]
    assert choice["winner"] == menu[0] and choice["mean"][menu[1]] < choice["mean"][menu[0]]
