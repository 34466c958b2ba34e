"""Few labels, many images: unlabelled images in the fit (null class), starting from another generator, the
leakage guard over both, and clear errors for unusable unlabelled inputs."""

import numpy as np
import pytest
import torch
from PIL import Image

import diffaug
from diffaug import DataError, MismatchError
from diffaug.cli import main
from diffaug.diffusion.trainer import TrainConfig, Trainer
from diffaug.loading import load_unlabeled
from diffaug.classify.pseudo import pseudo_label


@pytest.fixture(scope="module")
def few_and_many(digits_train):
    """10 labelled digits per class and the rest of the training half without labels."""
    few = digits_train.subset(per_class=10, seed=0)
    rest = np.setdiff1d(np.arange(len(digits_train)), [i for i, x in enumerate(digits_train.images)
                                                        if any(torch.equal(x, y) for y in few.images)])
    return few, digits_train.images[rest]


def test_unlabelled_rows_train_under_the_null_class(few_and_many):
    few, many = few_and_many
    trainer = Trainer(few, TrainConfig(steps=2, batch_size=32, unlabeled_share=0.25), device="cpu", progress=False,
                      unlabeled=many)
    keys = {bytes(x.numpy()) for x in many}
    x, y, _ = trainer.batch()
    assert y.shape == (32,) and (y[24:] == few.num_classes).all()   # the last quarter: unlabelled, null class
    pixels = ((x[24:] + 1) * 127.5).round().to(torch.uint8)
    assert all(bytes(p.contiguous().numpy()) in keys for p in pixels)
    assert (y[:24] <= few.num_classes).all() and (y[:24] < few.num_classes).any()   # labelled rows keep labels
    trainer.run()


def test_fit_with_unlabelled_images_and_an_init_records_both(few_and_many, digits_gen, tmp_path):
    few, many = few_and_many
    gen = diffaug.fit(few, steps=30, batch_size=32, progress=False, unlabeled=many, init=digits_gen)
    assert gen.config["unlabeled"]["count"] == len(many) and gen.config["unlabeled"]["share"] == 0.5
    assert gen.config["init"]["fingerprint"] == digits_gen.fingerprint
    assert len(gen.config["init"]["matched_classes"]) == 10
    # the leakage guard knows every image the generator saw: labelled, unlabelled and the init's
    seen = {bytes(h) for h in gen.data_hashes}
    assert {bytes(h) for h in diffaug.ImageData(many, torch.zeros(len(many), dtype=torch.long)).image_hashes()} <= seen
    assert {bytes(h) for h in digits_gen.data_hashes} <= seen
    gen.save(tmp_path / "g.safetensors")
    assert diffaug.Generator.load(tmp_path / "g.safetensors").config["unlabeled"] == gen.config["unlabeled"]


def test_fine_tuning_starts_from_the_init_weights_with_classes_matched_by_name(digits_gen, digits_train):
    # a 3-class dataset whose classes are '7', '1' and a new one: 7 and 1 keep their rows, the new one starts
    # from the init's null-class row
    keep = digits_train.labels < 3
    data = diffaug.ImageData(digits_train.images[keep], digits_train.labels[keep], ["7", "1", "new"])
    trainer = Trainer(data, TrainConfig(steps=1), device="cpu", progress=False,
                      init=__import__("diffaug.fitting", fromlist=["_init"])._init(digits_gen, data, "tiny")[0])
    old = digits_gen.model.state_dict()
    new = trainer.model.state_dict()
    assert torch.equal(new["stem.weight"], old["stem.weight"].to(new["stem.weight"].dtype))
    emb_old, emb_new = old["class_emb.weight"], new["class_emb.weight"]
    assert torch.equal(emb_new[0], emb_old[7]) and torch.equal(emb_new[1], emb_old[1])
    assert torch.equal(emb_new[2], emb_old[-1]) and torch.equal(emb_new[3], emb_old[-1])


def test_a_generator_whose_unlabelled_pool_held_test_images_is_refused(digits_train, digits_test):
    few = digits_train.subset(per_class=3, seed=0)
    gen = diffaug.fit(few, steps=5, batch_size=16, progress=False, unlabeled=digits_test.images[:50])
    with pytest.raises(DataError, match="saw 50 of the"):
        diffaug.evaluate(digits_train, digits_test, gen=gen, per_class=(3,), seeds=1, progress=False)


def test_bad_unlabelled_inputs_get_one_clear_error_each(digits_train, tmp_path):
    few = digits_train.subset(per_class=3, seed=0)
    with pytest.raises(MismatchError, match="unlabelled images are 1x9x9"):
        diffaug.fit(few, steps=1, progress=False, unlabeled=np.zeros((4, 9, 9), np.uint8))
    with pytest.raises(MismatchError, match="unlabelled images are 3x8x8"):
        diffaug.fit(few, steps=1, progress=False, unlabeled=np.zeros((4, 8, 8, 3), np.uint8))
    np.savez(tmp_path / "labelled.npz", images=np.zeros((4, 8, 8), np.uint8), labels=np.zeros(4))
    with pytest.raises(DataError, match="has `labels`: that is labelled data"):
        load_unlabeled(tmp_path / "labelled.npz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no images"):
        load_unlabeled(tmp_path / "empty")
    few.to_folder(tmp_path / "classes")
    with pytest.raises(DataError, match="has class sub-folders"):
        load_unlabeled(tmp_path / "classes")
    with pytest.raises(DataError, match="no such unlabelled data"):
        load_unlabeled(tmp_path / "nowhere")


def test_unlabelled_folders_npz_and_hf_datasets_load(digits_train, tmp_path):
    import datasets
    images = digits_train.images[:6]
    (tmp_path / "pile").mkdir()
    for i, x in enumerate(images.numpy()):
        Image.fromarray(x[0]).save(tmp_path / "pile" / f"{i}.png")
    assert torch.equal(load_unlabeled(tmp_path / "pile"), images)
    np.savez(tmp_path / "pile.npz", images=images.permute(0, 2, 3, 1).numpy())
    assert torch.equal(load_unlabeled(tmp_path / "pile.npz"), images)
    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(x[0]) for x in images.numpy()]},
                                    features=datasets.Features({"image": datasets.Image()}))
    ds.save_to_disk(str(tmp_path / "hf"))
    assert torch.equal(load_unlabeled(tmp_path / "hf"), images)


def test_the_cli_fits_with_unlabelled_images_and_an_init_and_info_shows_them(few_and_many, digits_gen_file,
                                                                            tmp_path, capsys):
    few, many = few_and_many
    few.to_npz(tmp_path / "few.npz")
    np.savez(tmp_path / "many.npz", images=many.permute(0, 2, 3, 1).numpy())
    out = tmp_path / "g.safetensors"
    assert main(["fit", str(tmp_path / "few.npz"), "--out", str(out), "--steps", "20", "--batch-size", "32",
                 "--unlabeled", str(tmp_path / "many.npz"), "--init", str(digits_gen_file), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"unlabeled  {len(many)} images" in text and "init       generator" in text
    assert main(["fit", str(tmp_path / "few.npz"), "--out", str(tmp_path / "h.safetensors"), "--steps", "1",
                 "--unlabeled", str(tmp_path / "few.npz")]) == 2
    assert "that is labelled data" in capsys.readouterr().err


def test_an_evaluation_with_unlabelled_images_fits_a_pool_generator_per_seed_and_adds_the_opponents(
        digits_train, digits_test, tmp_path, capsys):
    from diffaug.evaluation.protocol import check_leakage
    result = diffaug.evaluate(digits_train, digits_test, unlabeled="rest", per_class=(3,), seeds=2, gen_steps=10,
                              gen_batch_size=16, classifier_steps=20, batch_size=16, synthetic_per_class=4,
                              sample_steps=2, metrics=False, classical="crop", fixmatch_ratio=1, n_jobs=2,
                              out_dir=tmp_path)
    assert "pool generators: 100%" in capsys.readouterr().err   # the fits before any unit are not a silent wait
    pools = result.config["pool_generators"]
    files = sorted((tmp_path / "runs").glob("pool-generator-*.safetensors"))
    assert len(pools) == len(files) == 2
    for path in files:
        pool_gen = diffaug.Generator.load(path)
        assert pool_gen.fingerprint in {g["fingerprint"] for g in pools.values()}
        assert pool_gen.config["unlabeled"]["share"] == 1.0
        check_leakage(pool_gen, digits_train, digits_test)   # fitted on the training pool only
    for unit in result.units:
        assert {"self-training", "fixmatch", "fixmatch+synthesize", "self-training+synthesize",
                "self-training+synthesize-control"} <= set(unit["arms"])
        kept = unit["kept_after_filter"]["pseudo_labels"]
        assert kept["unlabeled"] == len(digits_train) - 30 and 0 <= kept["kept"] <= kept["unlabeled"]
        assert unit["generator"]["init"] == pools[str(unit["seed"])]["fingerprint"]   # its seed's pool generator
    assert result.config["primary"] == "self-training+synthesize"   # the default stack, with its dose control
    assert {"self-training", "fixmatch", "self-training+synthesize-control"} <= set(
        result.summary["3"]["primary"]["headline"]) and "vs self-training" in result.table()


def test_fit_pseudo_labels_the_confident_unlabelled_images(few_and_many, digits_train, tmp_path, capsys):
    """A classifier of the labelled images labels the unlabelled ones it is sure of; they train under those labels
    (the trainer's labelled rows), and the generator records how many and by which rule."""
    few, many = few_and_many
    truth = {bytes(x.numpy()): int(y) for x, y in zip(digits_train.images, digits_train.labels)}
    kept, info = pseudo_label(few, many, threshold=0.9, policy="trivialaugment(m=0.5)")
    assert 0 < len(kept) < len(many) and info["kept"] == len(kept) and sum(info["per_class"]) == len(kept)
    right = np.mean([truth[bytes(x.numpy())] == int(y) for x, y in zip(kept.images, kept.labels)])
    assert right > 0.9   # confident labels are mostly right (the withheld labels are read here, never in fit)
    with pytest.raises(DataError, match="needs unlabelled images"):
        diffaug.fit(few, steps=1, progress=False, pseudo_labels=0.9)
    with pytest.raises(DataError, match="threshold"):
        pseudo_label(few, many, threshold=0.0, policy="crop")
    np.savez(tmp_path / "many.npz", images=many.numpy())
    few.to_npz(tmp_path / "few.npz")
    out = tmp_path / "g.safetensors"
    assert main(["fit", str(tmp_path / "few.npz"), "--out", str(out), "--steps", "5", "--batch-size", "16",
                 "--unlabeled", str(tmp_path / "many.npz"), "--pseudo-labels", "0.9", "--pseudo-label-policy",
                 "trivialaugment(m=0.5)", "--quiet"]) == 0
    gen = diffaug.Generator.load(out)   # the same labeller as above: the same images kept
    record = gen.config["pseudo_labels"]
    assert record["kept"] == len(kept) and record["labelled"] == len(few)
    assert record["policy"] == "trivialaugment(m=0.5)"
    assert gen.config["data_size"] == len(few) + len(kept)
    assert main(["info", str(out)]) == 0 and "confidence >= 0.9, trivialaugment(m=0.5)" in capsys.readouterr().out
