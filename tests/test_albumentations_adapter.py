"""albumentations' DiffusionAugment: contract, dtype preservation and Compose(seed=) reproducibility."""

import numpy as np
import pytest

A = pytest.importorskip("albumentations")

from diffaug import DataError, SampleBank  # noqa: E402
from diffaug.adapters.albumentations import DiffusionAugment  # noqa: E402


@pytest.fixture(scope="module")
def bank(digits_gen, digits_train, tmp_path_factory):
    real = digits_train.subset(per_class=5, seed=1)
    return SampleBank.build(digits_gen, tmp_path_factory.mktemp("abank") / "bank", per_class=15, data=real,
                            copies=2, steps=8, progress=False), real


def hwc(x):
    return np.ascontiguousarray(x.permute(1, 2, 0).numpy())


def test_uint8_and_float32_in_give_the_same_type_out(bank):
    bank, real = bank
    img = hwc(real.images[0])
    for inp in (img, img.astype(np.float32) / 255, img[:, :, 0]):
        out = A.Compose([DiffusionAugment(bank, p=1.0)], seed=0)(image=inp, class_label=int(real.labels[0]))["image"]
        assert out.dtype == inp.dtype and out.shape == inp.shape and not np.array_equal(out, inp)
        assert out.max() <= (1.0 if inp.dtype == np.float32 else 255)


def test_synthesized_image_comes_from_the_labelled_class(bank):
    bank, real = bank
    out = DiffusionAugment(bank, p=1.0)(image=hwc(real.images[0]), class_label=7)["image"]
    stored = {bytes(np.ascontiguousarray(bank.synthetic(7, u / 15))) for u in range(15)}
    assert bytes(np.ascontiguousarray(out.transpose(2, 0, 1))) in stored


def test_compose_seed_makes_it_reproducible(bank):
    bank, real = bank

    def run(seed):
        pipe = A.Compose([DiffusionAugment(bank, mode="mix", p=0.6), A.HorizontalFlip(p=0.5)], seed=seed)
        return np.stack([pipe(image=hwc(x), class_label=int(y))["image"] for x, y in zip(real.images, real.labels)])
    assert np.array_equal(run(3), run(3)) and not np.array_equal(run(3), run(4))


def test_p_zero_leaves_images_alone_and_p_is_respected(bank):
    bank, real = bank
    img = hwc(real.images[2])
    assert np.array_equal(A.Compose([DiffusionAugment(bank, p=0.0)], seed=0)(image=img, class_label=1)["image"], img)
    pipe = A.Compose([DiffusionAugment(bank, p=0.5)], seed=0)
    changed = sum(not np.array_equal(pipe(image=img, class_label=1)["image"], img) for _ in range(200))
    assert 70 < changed < 130


def test_label_key_and_missing_label(bank, digits_gen):
    bank, real = bank
    img = hwc(real.images[0])
    out = DiffusionAugment(bank, p=1.0, label_key="y")(image=img, y=2)["image"]
    assert out.shape == img.shape
    with pytest.raises(DataError, match="needs the class label: call aug\\(image=img, class_label=y\\)"):
        DiffusionAugment(bank, p=1.0)(image=img)
    out = DiffusionAugment(digits_gen, mode="perturb", steps=4, p=1.0)(image=img)["image"]   # null class
    assert out.shape == img.shape


def test_init_schema_validates():
    with pytest.raises(Exception, match="mode"):
        DiffusionAugment(object(), mode="paint")
