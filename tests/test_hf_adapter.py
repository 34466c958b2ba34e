"""Hugging Face datasets expansion: features kept, provenance recorded, labels right, shards join exactly."""

import numpy as np
import pytest
from sklearn.svm import SVC

datasets = pytest.importorskip("datasets")

from diffaug import DataError, ImageData, MismatchError  # noqa: E402
from diffaug.hf import PROVENANCE, concatenate_shards, expand_dataset, perturb_dataset, to_hf_dataset  # noqa: E402


@pytest.fixture(scope="module")
def ds(digits_train):
    return to_hf_dataset(digits_train.subset(per_class=6, seed=0))


def pixels(rows):
    return np.stack([np.asarray(im, dtype=np.float32).reshape(-1) / 255 for im in rows])


def test_round_trip_keeps_features_and_synthetic_labels_are_right(ds, digits_gen, digits_train, tmp_path):
    out = expand_dataset(ds, digits_gen, per_class=30, seed=0, progress=False)
    assert len(out) == len(ds) + 300
    assert isinstance(out.features["image"], datasets.Image) and out.features["label"] == ds.features["label"]
    out.save_to_disk(tmp_path / "expanded")
    back = datasets.load_from_disk(str(tmp_path / "expanded"))
    assert back.features == out.features == datasets.Features({**ds.features, **PROVENANCE})
    synth = back.filter(lambda r: r["diffaug_synthetic"])
    assert len(synth) == 300 and set(synth["diffaug_mode"]) == {"synthesize"}
    assert set(synth["diffaug_generator"]) == {digits_gen.fingerprint}
    real = back.filter(lambda r: not r["diffaug_synthetic"])
    assert real["label"] == ds["label"] and set(real["diffaug_mode"]) == {"real"}
    clf = SVC().fit(digits_train.images.reshape(len(digits_train), -1).float().numpy() / 255, digits_train.labels)
    assert clf.score(pixels(synth["image"]), synth["label"]) >= 0.9


def test_per_class_dict_and_ratio(ds, digits_gen):
    out = expand_dataset(ds, digits_gen, per_class={"3": 7, 5: 2}, progress=False)
    assert sorted(out.filter(lambda r: r["diffaug_synthetic"])["label"]) == [3] * 7 + [5] * 2
    out = expand_dataset(ds, digits_gen, ratio=0.5, progress=False)
    assert len(out) == len(ds) + 30


def test_shards_concatenate_to_the_unsharded_result(ds, digits_gen):
    whole = expand_dataset(ds, digits_gen, per_class=5, batch_size=8, progress=False)
    parts = [expand_dataset(ds, digits_gen, per_class=5, batch_size=8, num_shards=3, shard_index=i, progress=False)
             for i in range(3)]
    joined = concatenate_shards(parts)
    assert len(joined) == len(whole) and joined["label"] == whole["label"]
    assert pixels(joined["image"]).tobytes() == pixels(whole["image"]).tobytes()


def test_dataset_dict_expands_train_only(ds, digits_gen):
    dd = datasets.DatasetDict({"train": ds, "test": ds.select(range(5))})
    out = expand_dataset(dd, digits_gen, per_class=1, progress=False)
    assert len(out["train"]) == len(ds) + 10 and len(out["test"]) == 5


def test_perturb_dataset_adds_copies_that_point_at_their_source(ds, digits_gen):
    ds2 = ds.add_column("note", [f"row{i}" for i in range(len(ds))])
    out = perturb_dataset(ds2, digits_gen, copies=2, strength=0.3, batch_size=16, progress=False)
    assert len(out) == 3 * len(ds)
    copies = out.filter(lambda r: r["diffaug_synthetic"])
    src = copies["diffaug_source_index"]
    assert sorted(src) == sorted(list(range(len(ds))) * 2)
    assert [copies["note"][i] for i in range(4)] == [f"row{j}" for j in src[:4]]
    assert [copies["label"][i] for i in range(len(copies))] == [ds["label"][j] for j in src]


def test_array_columns_keep_their_layout(digits_gen, digits_train):
    sub = digits_train.subset(per_class=2)
    ds = datasets.Dataset.from_dict({"pixels": sub.images[:, 0].numpy().tolist(), "y": sub.labels.tolist()},
                                    features=datasets.Features({"pixels": datasets.Array2D((8, 8), "uint8"),
                                                                "y": datasets.Value("int64")}))
    out = expand_dataset(ds, digits_gen, per_class=1, image_column="pixels", label_column="y", progress=False)
    assert out.features["pixels"] == ds.features["pixels"] and np.asarray(out[-1]["pixels"]).shape == (8, 8)


def test_clear_errors(ds, digits_gen):
    with pytest.raises(DataError, match=r"no image column 'img'; its columns are \['image', 'label'\]"):
        expand_dataset(ds, digits_gen, per_class=1, image_column="img")
    with pytest.raises(DataError, match="exactly one of per_class"):
        expand_dataset(ds, digits_gen)
    renamed = ds.cast_column("label", datasets.ClassLabel(names=[f"c{i}" for i in range(10)]))
    with pytest.raises(MismatchError, match="differ from the generator"):
        expand_dataset(renamed, digits_gen, per_class=1)
    big = to_hf_dataset(ImageData.from_arrays(np.zeros((10, 9, 9), np.uint8), np.arange(10)))
    with pytest.raises(MismatchError, match="resize them first"):
        expand_dataset(big, digits_gen, per_class=1)


# --- datasets contracts (issue 10) ------------------------------------------------------------------------

def test_real_rows_are_not_rewritten_and_only_shard_zero_carries_them(ds, digits_gen, tmp_path, monkeypatch):
    ds.save_to_disk(tmp_path / "real")
    on_disk = datasets.load_from_disk(str(tmp_path / "real"))
    originals = {f["filename"] for f in on_disk.cache_files}
    out = expand_dataset(on_disk, digits_gen, per_class=1, batch_size=8, num_shards=2, shard_index=0, progress=False)
    assert originals <= {f["filename"] for f in out.cache_files}   # the real rows are the original Arrow file
    assert out["image"][:len(ds)] == on_disk["image"] and out["diffaug_mode"][:len(ds)] == ["real"] * len(ds)

    def no_rewrites(self, *args, **kwargs):
        raise AssertionError("a shard without the real rows must not touch them")
    monkeypatch.setattr(datasets.Dataset, "cast", no_rewrites)
    monkeypatch.setattr(datasets.Dataset, "add_column", no_rewrites)
    other = expand_dataset(on_disk, digits_gen, per_class=1, batch_size=8, num_shards=2, shard_index=1, progress=False)
    assert len(other) == 10 - 8 and all(other["diffaug_synthetic"])   # the second of two 8-row chunks


def test_generated_rows_have_a_deterministic_fingerprint(ds, digits_gen):
    a = expand_dataset(ds, digits_gen, per_class=1, seed=0, progress=False)
    b = expand_dataset(ds, digits_gen, per_class=1, seed=0, progress=True)   # a display flag changes nothing
    c = expand_dataset(ds, digits_gen, per_class=1, seed=1, progress=False)
    assert a._fingerprint == b._fingerprint != c._fingerprint
    p = perturb_dataset(ds, digits_gen, strength=0.3, batch_size=16, progress=False)
    q = perturb_dataset(ds, digits_gen, strength=0.3, batch_size=16, progress=True)
    assert p._fingerprint == q._fingerprint != perturb_dataset(ds, digits_gen, strength=0.5, batch_size=16,
                                                               progress=False)._fingerprint


def test_num_proc_gives_the_same_rows(ds, digits_gen):
    one = expand_dataset(ds, digits_gen, per_class=2, batch_size=4, seed=3, progress=False)
    two = expand_dataset(ds, digits_gen, per_class=2, batch_size=4, seed=3, num_proc=2, progress=False)
    assert pixels(one["image"]).tobytes() == pixels(two["image"]).tobytes() and one["label"] == two["label"]


def test_perturb_shards_join_to_the_unsharded_result(ds, digits_gen):
    whole = perturb_dataset(ds, digits_gen, copies=2, strength=0.3, batch_size=16, progress=False)
    parts = [perturb_dataset(ds, digits_gen, copies=2, strength=0.3, batch_size=16, num_shards=3, shard_index=i,
                             progress=False) for i in range(3)]
    joined = concatenate_shards(parts)
    assert joined["diffaug_source_index"] == whole["diffaug_source_index"]
    assert pixels(joined["image"]).tobytes() == pixels(whole["image"]).tobytes()


def test_dataset_dict_splits_are_checked_and_get_their_own_rows(ds, digits_gen, tmp_path):
    dd = datasets.DatasetDict({"train": ds, "validation": ds})
    with pytest.raises(DataError, match=r"has splits \['train', 'validation'\]; no 'test' split"):
        expand_dataset(dd, digits_gen, per_class=1, splits=("test",), progress=False)
    out = expand_dataset(dd, digits_gen, per_class=1, splits="all", progress=False)
    assert len(out["train"]) == len(out["validation"]) == len(ds) + 10
    assert pixels(out["train"]["image"][-10:]).tobytes() != pixels(out["validation"]["image"][-10:]).tobytes()
    alone = expand_dataset(ds, digits_gen, per_class=1, progress=False)   # train keeps the plain seed
    assert pixels(out["train"]["image"]).tobytes() == pixels(alone["image"]).tobytes()
    with pytest.raises(DataError, match="no 'train' split"):
        perturb_dataset(datasets.DatasetDict({"validation": ds}), digits_gen, progress=False)


def test_ratio_counts_only_real_rows(ds, digits_gen):
    once = expand_dataset(ds, digits_gen, ratio=0.5, progress=False)
    twice = expand_dataset(once, digits_gen, ratio=0.5, progress=False)
    assert len(once) - len(ds) == 30 and len(twice) - len(once) == 30


def test_streaming_datasets_are_refused_clearly(ds, digits_gen):
    for streaming in (ds.to_iterable_dataset(), datasets.IterableDatasetDict({"train": ds.to_iterable_dataset()})):
        with pytest.raises(DataError, match="streaming"):
            expand_dataset(streaming, digits_gen, per_class=1)
        with pytest.raises(DataError, match="streaming"):
            perturb_dataset(streaming, digits_gen)


def test_perturb_with_several_processes_gives_the_same_rows(ds, digits_gen):
    """Every row's noise is its own stream (seed, row, copy), so however datasets' map splits the rows between
    processes (60 rows, batches of 8, two processes) the perturbations are those of one process. (The per-batch
    seeds this replaced were suspected of breaking this; with datasets 5.2 the old code passed this test too.)"""
    one = perturb_dataset(ds, digits_gen, copies=2, strength=0.5, batch_size=8, sampler="ddpm", steps=6, seed=2,
                          progress=False)
    two = perturb_dataset(ds, digits_gen, copies=2, strength=0.5, batch_size=8, sampler="ddpm", steps=6, seed=2,
                          num_proc=2, progress=False)
    assert one["diffaug_source_index"] == two["diffaug_source_index"]
    assert pixels(one["image"]).tobytes() == pixels(two["image"]).tobytes()


def test_balance_fills_every_class_to_the_largest_or_to_a_number(digits_gen, digits_train, tmp_path, capsys):
    from diffaug.cli import main

    counts = [2, 5, 1, 3, 4, 2, 6, 1, 2, 3]   # a long tail: the largest class has 6 real images
    keep = np.concatenate([np.flatnonzero(digits_train.labels.numpy() == c)[:n] for c, n in enumerate(counts)])
    uneven = to_hf_dataset(digits_train.select(np.sort(keep)))
    out = expand_dataset(uneven, digits_gen, per_class="balance", progress=False)
    assert np.bincount(out["label"], minlength=10).tolist() == [6] * 10
    synthetic = np.array(out["label"])[np.array(out["diffaug_synthetic"])]
    assert np.bincount(synthetic, minlength=10).tolist() == [6 - n for n in counts]
    again = expand_dataset(out, digits_gen, per_class="balance", progress=False)   # balanced already: nothing to add
    assert len(again) == len(out)
    to_four = expand_dataset(uneven, digits_gen, per_class="balance", balance_to=4, progress=False)
    assert np.bincount(to_four["label"], minlength=10).tolist() == [max(4, n) for n in counts]
    with pytest.raises(DataError, match="balance_to= goes with"):
        expand_dataset(uneven, digits_gen, per_class=3, balance_to=4)
    uneven.save_to_disk(str(tmp_path / "uneven"))
    gen_file = tmp_path / "g.safetensors"
    digits_gen.save(gen_file)
    assert main(["expand", str(tmp_path / "uneven"), "--gen", str(gen_file), "--balance", "--out",
                 str(tmp_path / "balanced"), "--quiet"]) == 0
    import datasets
    assert np.bincount(datasets.load_from_disk(str(tmp_path / "balanced"))["label"]).tolist() == [6] * 10
    assert main(["expand", str(tmp_path / "uneven"), "--gen", str(gen_file), "--balance", "--per-class", "3",
                 "--out", str(tmp_path / "both")]) == 2
    assert "not --per-class and --balance together" in capsys.readouterr().err
