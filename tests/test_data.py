"""ImageData: every source gives the same in-memory form; bad input gets a clear error."""

import gzip
import struct

import numpy as np
import pytest
import torch

import diffaug
from diffaug import DataError, ImageData
from conftest import draw_shapes


def test_digits_builtin_is_a_stratified_half_split():
    train, test, full = (diffaug.load_data("digits", s) for s in ("train", "test", "all"))
    assert len(full) == 1797 and len(train) + len(test) == 1797
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 8, 8)
    assert int(full.images.max()) == 255 and full.class_names == [str(i) for i in range(10)]
    # stratified: every class is split about in half
    for a, b in zip(train.class_counts(), test.class_counts()):
        assert abs(a - b) <= 1
    # disjoint: no training row appears among the test rows
    tr = {bytes(x.numpy()) + bytes([int(y)]) for x, y in zip(train.images, train.labels)}
    te = {bytes(x.numpy()) + bytes([int(y)]) for x, y in zip(test.images, test.labels)}
    assert len(tr & te) < 5   # digits has a handful of exact duplicate images


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW", "float01"])
def test_npz_layouts_round_trip(tmp_path, layout):
    data = draw_shapes(5, size=(12, 10), channels=1 if layout == "NHW" else 3, num_classes=3)
    arr = data.images.numpy()
    arr = {"NHW": arr[:, 0], "NHWC": arr.transpose(0, 2, 3, 1), "NCHW": arr,
           "float01": arr.transpose(0, 2, 3, 1) / 255.0}[layout]
    np.savez(tmp_path / "d.npz", images=arr, labels=data.labels.numpy(), class_names=np.array(data.class_names))
    back = diffaug.load_data(tmp_path / "d.npz")
    assert torch.equal(back.images, data.images) and torch.equal(back.labels, data.labels)
    assert back.class_names == data.class_names
    back.to_npz(tmp_path / "again.npz")
    assert torch.equal(ImageData.from_npz(tmp_path / "again.npz").images, data.images)


def test_image_folder(tmp_path):
    from PIL import Image
    data = draw_shapes([3, 2], size=(9, 11), channels=3, num_classes=2)
    for i, (x, y) in enumerate(zip(data.images, data.labels)):
        d = tmp_path / ["cats", "dogs"][int(y)]
        d.mkdir(exist_ok=True)
        Image.fromarray(x.permute(1, 2, 0).numpy()).save(d / f"{i}.png")
    back = diffaug.load_data(tmp_path)
    assert back.class_names == ["cats", "dogs"] and back.class_counts() == [3, 2]
    assert back.images.shape == (5, 3, 9, 11)
    assert sorted(map(bytes, back.images.numpy())) == sorted(map(bytes, data.images.numpy()))


def test_hf_dataset_on_disk_keeps_classlabel_names(tmp_path):
    datasets = pytest.importorskip("datasets")
    data = draw_shapes(4, size=(10, 10), channels=1, num_classes=3)
    features = datasets.Features({"img": datasets.Image(), "y": datasets.ClassLabel(names=["a", "b", "c"])})
    from PIL import Image
    ds = datasets.Dataset.from_dict({"img": [Image.fromarray(x[0].numpy()) for x in data.images],
                                     "y": data.labels.tolist()}, features=features)
    ds.save_to_disk(tmp_path / "ds")
    back = diffaug.load_data(tmp_path / "ds", image_column="img", label_column="y")
    assert back.class_names == ["a", "b", "c"] and torch.equal(back.images, data.images)
    with pytest.raises(DataError, match="no column 'image'"):
        diffaug.load_data(tmp_path / "ds")


def test_torchvision_dataset_object():
    from torchvision.datasets import FakeData
    ds = FakeData(size=12, image_size=(3, 16, 16), num_classes=3, random_offset=0)
    data = ImageData.from_torchvision(ds)
    assert data.images.shape == (12, 3, 16, 16) and len(data.labels) == 12


def _write_idx(path, arr):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


def test_fashion_mnist_reads_a_torchvision_style_root(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    shapes = draw_shapes(3, size=(28, 28), num_classes=10)
    for prefix in ("train", "t10k"):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", shapes.images[:, 0].numpy())
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", shapes.labels.numpy().astype(np.uint8))
    data = diffaug.load_data("fashion-mnist", "test", root=tmp_path)
    assert torch.equal(data.images, shapes.images) and data.class_names[0] == "T-shirt/top"
    assert len(diffaug.load_data("fashion-mnist", "all", root=tmp_path)) == 60


def test_fashion_mnist_absent_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        diffaug.load_data("fashion-mnist", root=tmp_path)


def test_subset_and_split_are_stratified_and_seeded():
    data = draw_shapes([30, 12, 7], size=(8, 8), num_classes=3)
    sub = data.subset(per_class=10, seed=1)
    assert sub.class_counts() == [10, 10, 7]
    assert torch.equal(sub.images, data.subset(per_class=10, seed=1).images)
    assert not torch.equal(sub.images, data.subset(per_class=10, seed=2).images)
    a, b = data.split(0.5, seed=0)
    assert a.class_counts() == [15, 6, 4] and b.class_counts() == [15, 6, 3]


@pytest.mark.parametrize("images, labels, message", [
    (np.zeros((0, 8, 8), np.uint8), np.zeros(0, int), "empty"),
    (np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 2, -1]), "labels must lie in"),
    (np.zeros((4, 8, 8), np.uint8), np.array([0, 1, 2]), "4 images but 3 labels"),
    (np.full((2, 8, 8), np.nan), np.array([0, 1]), "NaN"),
    (np.full((2, 8, 8), 300, np.int32), np.array([0, 1]), "0..255"),
    (np.full((2, 8, 8), -0.5), np.array([0, 1]), "float images must lie in"),
    (np.zeros((2, 8), np.uint8), np.array([0, 1]), "must have shape"),
    (np.array(["a", "b"]), np.array([0, 1]), "numeric array"),
    (np.zeros((2, 8, 8), np.uint8), np.array([0.5, 1.0]), "whole numbers"),
])
def test_bad_arrays_are_refused_clearly(images, labels, message):
    with pytest.raises(DataError, match=message):
        ImageData.from_arrays(images, labels)


def test_a_class_without_images_is_named():
    with pytest.raises(DataError, match="no images: b"):
        ImageData.from_arrays(np.zeros((2, 8, 8), np.uint8), np.array([0, 2]), ["a", "b", "c"])


def test_mixed_sizes_in_a_folder_are_refused(tmp_path):
    from PIL import Image
    (tmp_path / "a").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "a" / "1.png")
    Image.new("L", (9, 8)).save(tmp_path / "a" / "2.png")
    with pytest.raises(DataError, match="mixed sizes"):
        diffaug.load_data(tmp_path)


def test_corrupt_and_unknown_sources(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        diffaug.load_data(tmp_path / "bad.npz")
    with pytest.raises(DataError, match="unknown data"):
        diffaug.load_data("no-such-dataset")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read image"):
        diffaug.load_data(tmp_path)
