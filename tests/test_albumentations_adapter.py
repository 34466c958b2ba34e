"""albumentations' DiffusionAugment: contract, dtype preservation and Compose(seed=) reproducibility."""

import numpy as np
import pytest

A = pytest.importorskip("albumentations")

from diffaug import DataError, SampleBank  # noqa: E402
from diffaug.adapters.albumentations import AlbumentationsDiffusionAugment  # noqa: E402


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
        pipe = A.Compose([AlbumentationsDiffusionAugment(bank, p=1.0)], seed=0)
        out = pipe(image=inp, class_label=int(real.labels[0]))["image"]
        assert out.dtype == inp.dtype and out.shape == inp.shape and not np.array_equal(out, inp)
        assert out.max() <= (1.0 if inp.dtype == np.float32 else 255)


def test_synthesized_image_comes_from_the_labelled_class(bank):
    bank, real = bank
    out = AlbumentationsDiffusionAugment(bank, p=1.0)(image=hwc(real.images[0]), class_label=7)["image"]
    stored = {bytes(np.ascontiguousarray(bank.synthetic(7, u / 15))) for u in range(15)}
    assert bytes(np.ascontiguousarray(out.transpose(2, 0, 1))) in stored


def test_compose_seed_makes_it_reproducible(bank):
    bank, real = bank

    def run(seed):
        pipe = A.Compose([AlbumentationsDiffusionAugment(bank, mode="mix", p=0.6), A.HorizontalFlip(p=0.5)], seed=seed)
        return np.stack([pipe(image=hwc(x), class_label=int(y))["image"] for x, y in zip(real.images, real.labels)])
    assert np.array_equal(run(3), run(3)) and not np.array_equal(run(3), run(4))


def test_p_zero_leaves_images_alone_and_p_is_respected(bank):
    bank, real = bank
    img = hwc(real.images[2])
    never = A.Compose([AlbumentationsDiffusionAugment(bank, p=0.0)], seed=0)
    assert np.array_equal(never(image=img, class_label=1)["image"], img)
    pipe = A.Compose([AlbumentationsDiffusionAugment(bank, p=0.5)], seed=0)
    changed = sum(not np.array_equal(pipe(image=img, class_label=1)["image"], img) for _ in range(200))
    assert 70 < changed < 130


def test_label_key_and_missing_label(bank, digits_gen):
    bank, real = bank
    img = hwc(real.images[0])
    out = AlbumentationsDiffusionAugment(bank, p=1.0, label_key="y")(image=img, y=2)["image"]
    assert out.shape == img.shape
    with pytest.raises(DataError, match="needs the class label: call aug\\(image=img, class_label=y\\)"):
        AlbumentationsDiffusionAugment(bank, p=1.0)(image=img)
    out = AlbumentationsDiffusionAugment(digits_gen, mode="perturb", steps=4, p=1.0)(image=img)["image"]   # null class
    assert out.shape == img.shape


def test_init_schema_validates():
    with pytest.raises(Exception, match="mode"):
        AlbumentationsDiffusionAugment(object(), mode="paint")


# --- albumentations contracts (issue 10) ------------------------------------------------------------------

def test_strict_compose_accepts_the_label_key(bank):
    bank, real = bank
    out = A.Compose([AlbumentationsDiffusionAugment(bank, p=1.0)], strict=True, seed=0)(
        image=hwc(real.images[0]), class_label=4)
    assert bytes(np.ascontiguousarray(out["image"].transpose(2, 0, 1))) in {
        bytes(np.ascontiguousarray(bank.synthetic(4, u / 15))) for u in range(15)}
    with pytest.raises(ValueError, match="not in available keys"):   # strictness itself is kept
        A.Compose([AlbumentationsDiffusionAugment(bank, p=1.0)], strict=True)(image=hwc(real.images[0]), y=1)


def test_serialization_round_trip_with_a_bank_path(bank, digits_gen, tmp_path):
    bank, real = bank
    pipe = A.Compose([AlbumentationsDiffusionAugment(bank.path, mode="mix", p=0.7), A.HorizontalFlip(p=0.5)], seed=5)
    again = A.from_dict(A.to_dict(pipe))
    again.set_random_seed(5)
    for x, y in zip(real.images[:20], real.labels[:20]):
        a = pipe(image=hwc(x), class_label=int(y))["image"]
        b = again(image=hwc(x), class_label=int(y))["image"]
        assert np.array_equal(a, b)
    path = tmp_path / "gen.safetensors"   # a generator saved to a file serializes as its path too
    digits_gen.save(path)
    aug = AlbumentationsDiffusionAugment(str(path), mode="perturb", p=1.0)
    back = A.from_dict(A.to_dict(aug))
    assert isinstance(back, AlbumentationsDiffusionAugment) and back.source == str(path) and back.mode == "perturb"
    with pytest.raises(DataError, match="in-memory Generator cannot be serialized"):
        A.to_dict(A.Compose([AlbumentationsDiffusionAugment(digits_gen, p=1.0)]))


def test_images_batch_gets_one_draw_per_image(bank):
    bank, real = bank
    batch = np.stack([hwc(x) for x in real.images[:12]])
    out = A.Compose([AlbumentationsDiffusionAugment(bank, p=1.0)], seed=0)(images=batch, class_label=2)["images"]
    assert out.shape == batch.shape and len({bytes(o) for o in out}) > 6
    labels = [int(y) for y in real.labels[:12]]   # one label per image
    out = A.Compose([AlbumentationsDiffusionAugment(bank, p=1.0)], seed=0)(images=batch, class_label=labels)["images"]
    for o, y in zip(out, labels):
        assert bytes(np.ascontiguousarray(o.transpose(2, 0, 1))) in {
            bytes(np.ascontiguousarray(bank.synthetic(y, u / 15))) for u in range(15)}


@pytest.mark.parametrize("target", ["mask", "masks", "bboxes", "keypoints"])
def test_masks_boxes_and_keypoints_are_refused(bank, target):
    bank, real = bank
    img = hwc(real.images[0])
    value = {"mask": np.zeros((8, 8), np.uint8), "masks": [np.zeros((8, 8), np.uint8)],
             "bboxes": np.array([[1, 1, 4, 4]], dtype=np.float32), "keypoints": np.array([[2.0, 3.0]])}[target]
    params = {"bboxes": A.BboxParams(format="pascal_voc", label_fields=[]),
              "keypoints": A.KeypointParams(format="xy")}
    pipe = A.Compose([AlbumentationsDiffusionAugment(bank, p=1.0)], seed=0,
                     bbox_params=params.get("bboxes") if target == "bboxes" else None,
                     keypoint_params=params.get("keypoints") if target == "keypoints" else None)
    with pytest.raises(DataError, match="would no longer match"):
        pipe(image=img, class_label=1, **{target: value})


def test_the_old_name_explains_the_new_one():
    with pytest.raises(ImportError, match="AlbumentationsDiffusionAugment"):
        from diffaug.adapters.albumentations import DiffusionAugment  # noqa: F401


def test_importing_the_adapter_makes_no_network_call():
    import os
    import subprocess
    import sys
    probe = ("import socket\n"
             "calls = []\n"
             "def refuse(*args, **kwargs):\n"
             "    calls.append(args)\n"
             "    raise OSError('offline')\n"
             "socket.create_connection = refuse\n"
             "import diffaug.adapters.albumentations\n"
             "print(len(calls))\n")
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "0", out.stdout + out.stderr
