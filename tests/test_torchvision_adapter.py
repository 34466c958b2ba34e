"""DiffusionAugment (torchvision v2), SampleBank, augment_dataset and DiffusionBatchAugment on real digits."""

import numpy as np
import PIL.Image
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torchvision import tv_tensors
from torchvision.transforms import v2

import diffaug
from diffaug import DataError, DiffusionAugment, DiffusionBatchAugment, MismatchError, SampleBank


@pytest.fixture(scope="module")
def real(digits_train):
    return digits_train.subset(per_class=8, seed=0)


@pytest.fixture(scope="module")
def bank(digits_gen, real, tmp_path_factory):
    path = tmp_path_factory.mktemp("bank") / "bank"
    return SampleBank.build(digits_gen, path, per_class=20, data=real, copies=3, strength=(0.3, 0.5), steps=10,
                            progress=False)


def bank_images(bank, label):
    return {bytes(np.ascontiguousarray(bank.synthetic(label, u / 20))) for u in range(20)}


def test_bank_on_disk_reloads_and_knows_its_generator(bank, digits_gen, digits_train):
    again = SampleBank(bank.path, generator=digits_gen)
    assert again.meta["synthetic_count"] == 200 and again.copies == 3
    assert again.meta["strengths"] == pytest.approx([1 / 3 * 0.2 * 0.5 + 0.3, 0.4, 0.5 - 0.2 / 6])
    other = diffaug.fit(digits_train.subset(per_class=5), steps=2, progress=False, warmup=1)
    with pytest.raises(MismatchError, match="built from generator"):
        SampleBank(bank.path, generator=other)
    with pytest.raises(diffaug.DiffaugError, match="already exists"):
        SampleBank.build(digits_gen, bank.path, per_class=1, progress=False)


def test_synthesize_replaces_the_image_by_one_of_its_class(bank, real):
    aug = DiffusionAugment(bank, p=1.0, mode="synthesize")
    x, y = real.images[0], int(real.labels[0])
    out, label = aug(x, y)
    assert label == y and out.dtype == torch.uint8 and out.shape == x.shape
    assert bytes(out.numpy()) in bank_images(bank, y)


@pytest.mark.parametrize("kind", ["pil", "uint8", "float", "tv_image"])
def test_returns_the_type_dtype_and_range_it_received(bank, real, kind):
    x = real.images[3]
    inpt = {"pil": PIL.Image.fromarray(x[0].numpy()), "uint8": x, "float": x.float() / 255,
            "tv_image": tv_tensors.Image(x)}[kind]
    for mode in ("synthesize", "perturb"):
        out, _ = DiffusionAugment(bank, p=1.0, mode=mode)(inpt, int(real.labels[3]))
        assert type(out) is type(inpt)
        if kind == "pil":
            assert out.mode == "L" and out.size == (8, 8)
        else:
            assert out.dtype == inpt.dtype and out.shape == inpt.shape
            assert float(out.max()) <= (1.0 if kind == "float" else 255)


def test_inside_a_v2_compose(bank, real):
    tf = v2.Compose([DiffusionAugment(bank, p=1.0, mode="mix"), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
    img, label = tf(PIL.Image.fromarray(real.images[0][0].numpy()), 4)
    assert img.shape == (1, 8, 8) and img.dtype == torch.float32 and label == 4


def test_perturb_from_the_bank_returns_a_stored_copy(bank, real):
    aug = DiffusionAugment(bank, p=1.0, mode="perturb")
    x = real.images[5]
    out = aug(x)   # no label needed: the copies are looked up by the image's pixels
    row = bank.find(x)
    assert any(np.array_equal(out.numpy(), bank.perturbed(row, m / 3)) for m in range(3))


def test_image_alone_synthesize_explains_how_to_pass_the_label(bank, real):
    with pytest.raises(DataError, match="needs the class label.*augment_dataset"):
        DiffusionAugment(bank, p=1.0)(real.images[0])


def test_unknown_image_for_bank_perturb_is_explained(bank):
    with pytest.raises(DataError, match="not in the sample bank"):
        DiffusionAugment(bank, p=1.0, mode="perturb")(torch.zeros(1, 8, 8, dtype=torch.uint8))


def test_generator_source_perturbs_on_the_fly_without_labels(digits_gen, real):
    aug = DiffusionAugment(digits_gen, p=1.0, mode="perturb", strength=(0.2, 0.6), steps=6)
    out = aug(real.images[0])
    assert out.shape == (1, 8, 8) and not torch.equal(out, real.images[0])


def test_size_channel_and_label_mismatches(bank, digits_gen):
    aug = DiffusionAugment(digits_gen, p=1.0, steps=4)
    with pytest.raises(MismatchError, match=r"28x28.*makes 1x8x8: put v2.Resize\(\(8, 8\)\)"):
        aug(torch.zeros(1, 28, 28, dtype=torch.uint8), 1)
    with pytest.raises(MismatchError, match="3x8x8"):
        aug(PIL.Image.new("RGB", (8, 8)), 1)
    with pytest.raises(MismatchError, match="label 12 is not a class"):
        aug(torch.zeros(1, 8, 8, dtype=torch.uint8), 12)
    with pytest.raises(DataError, match="mode must be one of"):
        DiffusionAugment(bank, mode="paint")


def test_p_is_respected(bank, real):
    torch.manual_seed(0)
    aug = DiffusionAugment(bank, p=0.3)
    changed = sum(not torch.equal(aug(x, int(y))[0], x) for x, y in zip(real.images, real.labels))
    assert 0.15 * len(real) < changed < 0.45 * len(real)
    assert all(torch.equal(DiffusionAugment(bank, p=0.0)(x, 1)[0], x) for x in real.images[:10])


def _loader(bank, real, seed, context=None):
    aug = DiffusionAugment(bank, p=0.5, mode="mix")
    ds = diffaug.augment_dataset(TensorDataset(real.images, real.labels), aug,
                                 transform=v2.ToDtype(torch.float32, scale=True))
    return DataLoader(ds, batch_size=16, num_workers=2, shuffle=True, multiprocessing_context=context,
                      generator=torch.Generator().manual_seed(seed))


def test_dataloader_workers_are_seeded_and_reproducible(bank, real):
    """The same seed gives the same batches, whichever way the workers start: a spawned worker (a fresh
    interpreter, as on macOS and Windows) draws what a forked one draws (its start costs seconds: one run of it)."""
    run = lambda seed, context: torch.cat([x for x, _ in _loader(bank, real, seed, context)])  # noqa: E731
    a, b, c = run(0, "fork"), run(0, "fork"), run(1, "fork")
    assert a.shape == (80, 1, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(run(0, "spawn"), a)


def test_batch_augment_replaces_the_chosen_fraction(bank, digits_gen, real):
    x, y = real.images[:40].float() / 255, real.labels[:40]
    for source in (bank, digits_gen):
        torch.manual_seed(0)
        out, labels = DiffusionBatchAugment(source, p=0.25, mode="synthesize", steps=6)(x, y)
        assert torch.equal(labels, y) and out.dtype == x.dtype and out.shape == x.shape
        changed = (out != x).flatten(1).any(1)
        assert changed.sum() == 10 and float(out.max()) <= 1.0
    torch.manual_seed(1)
    out, _ = DiffusionBatchAugment(digits_gen, p=0.5, mode="perturb", steps=6)(real.images[:20], real.labels[:20])
    assert out.dtype == torch.uint8 and (out != real.images[:20]).flatten(1).any(1).sum() == 10


# --- v2 contracts (issue 10) ----------------------------------------------------------------------------

def test_boxes_masks_and_keypoints_are_refused_not_passed_through(bank, real):
    aug = DiffusionAugment(bank, p=1.0)
    img = tv_tensors.Image(real.images[0])
    boxes = tv_tensors.BoundingBoxes([[1, 1, 4, 4]], format="XYXY", canvas_size=(8, 8))
    mask = tv_tensors.Mask(torch.zeros(1, 8, 8, dtype=torch.uint8))
    for sample in ({"image": img, "boxes": boxes, "label": 3}, (img, mask, 3), {"image": img, "masks": mask}):
        with pytest.raises(DataError, match="would no longer match"):
            aug(sample)
    with pytest.raises(DataError, match="would no longer match"):
        aug(mask, 3)   # the two-argument shortcut too
    with pytest.raises(DataError, match="would no longer match"):   # also when this call would not apply
        DiffusionAugment(bank, p=0.0)({"image": img, "boxes": boxes})


def test_label_of_one_call_never_reaches_another_thread(bank, real):
    import sys
    import threading

    aug = DiffusionAugment(bank, p=1.0, mode="synthesize")
    stored = {c: bank_images(bank, c) for c in range(10)}
    wrong, errors = [], []

    def worker(c):
        try:
            for _ in range(150):
                out = aug(real.images[0], c)[0]
                if bytes(out.numpy()) not in stored[c]:
                    wrong.append(c)
        except Exception as e:   # noqa: BLE001 - a failure in a thread must reach the test
            errors.append(e)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # switch threads as often as possible: a shared label would be caught
    try:
        threads = [threading.Thread(target=worker, args=(c,)) for c in range(10)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    finally:
        sys.setswitchinterval(interval)
    assert not errors and not wrong, f"{len(wrong)} images of another class; errors {errors[:1]}"


@pytest.mark.parametrize("key", ["labels", "Label", "target"])
def test_dict_samples_find_the_label_as_v2_does(bank, real, key):
    aug = DiffusionAugment(bank, p=1.0, label_key="target")
    out = aug({"image": real.images[0], key: torch.tensor(4)})
    assert bytes(out["image"].numpy()) in bank_images(bank, 4) and int(out[key]) == 4


def test_random_apply_and_compose_with_labels(bank, real):
    torch.manual_seed(0)
    pipe = v2.Compose([v2.RandomApply([DiffusionAugment(bank, p=1.0)], p=0.5), v2.ToDtype(torch.float32, scale=True)])
    outs = [pipe(tv_tensors.Image(real.images[i]), int(real.labels[i])) for i in range(40)]
    changed = [i for i, (x, y) in enumerate(outs) if not torch.equal((x * 255).round().to(torch.uint8), real.images[i])]
    assert 8 < len(changed) < 32 and all(y == int(real.labels[i]) for i, (x, y) in enumerate(outs))
    for i in changed:
        assert bytes((outs[i][0] * 255).round().to(torch.uint8).numpy()) in bank_images(bank, int(real.labels[i]))


def test_albumentations_style_call_points_to_the_albumentations_transform(bank, real):
    with pytest.raises(DataError, match="AlbumentationsDiffusionAugment"):
        DiffusionAugment(bank, p=1.0)(image=real.images[0].permute(1, 2, 0).numpy(), class_label=3)


@pytest.mark.parametrize("context", ["threads", "fork", "spawn"])
def test_dataloader_with_thread_and_process_workers(bank, real, context):
    ds = diffaug.augment_dataset(TensorDataset(real.images, real.labels), DiffusionAugment(bank, p=1.0))
    if context == "threads":   # a thread-based mapper, as free-threaded or async loaders run transforms
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(4) as pool:
            items = list(pool.map(ds.__getitem__, range(len(ds))))
    else:
        loader = DataLoader(ds, batch_size=16, num_workers=2, multiprocessing_context=context)
        items = [(x, y) for xs, ys in loader for x, y in zip(xs, ys)]
    assert len(items) == len(real)
    assert all(bytes(x.numpy()) in bank_images(bank, int(y)) for x, y in items)
