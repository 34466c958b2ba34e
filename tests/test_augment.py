"""Non-leaking augmentation of the generator's training images: the network is told how each image was
transformed, and sampling asks for "not transformed"."""

import math

import numpy as np
import pytest
import torch

import diffaug
from diffaug.cli import main
from diffaug.diffusion.augment import AUGMENT_DIM, augment
from diffaug.diffusion.trainer import TrainConfig, Trainer
from diffaug.diffusion.unet import UNet, UNetConfig
from diffaug.errors import DiffaugError


def _digits_floats(data, n):
    return data.images[:n].float() / 127.5 - 1


def test_no_augmentation_leaves_images_alone(digits_train):
    x = _digits_floats(digits_train, 64)
    out, cond = augment(x, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(out, x) and cond.shape == (64, AUGMENT_DIM) and not cond.any()


def _redo(image: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The exact transforms the vector `c` describes, redone with numpy (flips, quarter turn, reflected shift)."""
    h, w = image.shape
    if c[0]:
        image = image[:, ::-1]
    if c[1]:
        image = image[::-1, :]
    k = round(math.atan2(c[3], c[2] + 1) / (math.pi / 2)) % 4
    image = np.rot90(image, k)
    dx, dy = round(c[4] * w), round(c[5] * h)
    padded = np.pad(image, ((h, h), (w, w)), mode="reflect")
    return padded[h - dy:2 * h - dy, w - dx:2 * w - dx]


def test_the_vector_says_exactly_what_was_done(digits_train):
    """Where no resampling was drawn, redoing the vector's flips, turn and shift on the original gives the
    augmented image, pixel for pixel; the identity vector leaves the image as it was."""
    x = _digits_floats(digits_train, 600)
    out, cond = augment(x, 0.4, torch.Generator().manual_seed(1))
    exact = (cond[:, 6:] == 0).all(1)
    assert 100 < int(exact.sum()) < 600 and (cond[exact, :6] != 0).any(1).sum() > 50   # both kinds occur
    for i in torch.nonzero(exact).flatten().tolist():
        redone = _redo(x[i, 0].numpy(), cond[i].numpy())
        assert np.array_equal(redone, out[i, 0].numpy()), f"image {i}, vector {cond[i].tolist()}"
    untouched = (cond == 0).all(1)
    assert untouched.any() and torch.equal(out[untouched], x[untouched])
    resampled = ~exact
    assert not torch.equal(out[resampled], x[resampled])


def test_sampling_is_conditioned_on_no_augmentation():
    torch.manual_seed(0)
    net = UNet(1, 3, UNetConfig(channels=8, mults=(1, 2), attn_levels=(), emb_dim=32, augment_dim=AUGMENT_DIM)).eval()
    with torch.no_grad():
        for p in net.parameters():   # as after training (a fresh net's zero-initialised output layers give zeros)
            p.normal_(0, 0.2)
        z, t, y = torch.randn(4, 1, 8, 8), torch.rand(4), torch.tensor([0, 1, 2, 3])
        plain = net(z, t, y)
        assert torch.equal(plain, net(z, t, y, torch.zeros(4, AUGMENT_DIM)))
        assert not torch.allclose(plain, net(z, t, y, torch.ones(4, AUGMENT_DIM)))
    with pytest.raises(DiffaugError, match="without augmentation"):
        UNet(1, 3, UNetConfig(channels=8, mults=(1, 2), attn_levels=(), emb_dim=32))(z, t, y, torch.zeros(4, 9))


def test_the_trainer_feeds_the_vector_and_an_init_starts_unchanged(digits_train, digits_gen):
    few = digits_train.subset(per_class=5, seed=0)
    trainer = Trainer(few, TrainConfig(steps=2, batch_size=32, augment=0.5), device="cpu", progress=False,
                      init=digits_gen.model)
    x, y, cond = trainer.batch()
    assert cond.shape == (32, AUGMENT_DIM) and cond.any() and not cond.all()
    # the init had no augmentation layer: a zero one is added, so the network starts as the init, whatever the vector
    z, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    with torch.no_grad():
        assert torch.equal(trainer.model(z, t, y[:4], cond[:4]), digits_gen.model.float()(z, t, y[:4]))
    trainer.run()
    assert Trainer(few, TrainConfig(steps=2, batch_size=32), device="cpu", progress=False).batch()[2] is None


def test_fit_with_augmentation_round_trips(digits_train, digits_gen, tmp_path):
    few = digits_train.subset(per_class=5, seed=0)
    gen = diffaug.fit(few, steps=20, batch_size=32, progress=False, augment=0.5, init=digits_gen)
    assert gen.config["unet"]["augment_dim"] == AUGMENT_DIM and gen.config["train"]["augment"] == 0.5
    assert gen.config["init"]["fingerprint"] == digits_gen.fingerprint
    gen.save(tmp_path / "g.safetensors")
    again = diffaug.Generator.load(tmp_path / "g.safetensors")
    assert torch.equal(again.sample([0, 3, 7], seed=2, steps=4), gen.sample([0, 3, 7], seed=2, steps=4))
    assert "augment_dim" not in digits_gen.config["unet"]   # files without it read as before, in older diffaug too


def test_cli_fit_augment(tmp_path, capsys):
    out = tmp_path / "g.safetensors"
    assert main(["fit", "digits", "--out", str(out), "--steps", "5", "--batch-size", "16", "--augment", "0.3",
                 "--quiet"]) == 0
    assert diffaug.Generator.load(out).config["train"]["augment"] == 0.3
    assert main(["info", str(out)]) == 0 and "non-leaking augmentation p=0.3" in capsys.readouterr().out
    assert main(["fit", "digits", "--out", str(tmp_path / "h.safetensors"), "--steps", "5", "--augment", "1.5",
                 "--quiet"]) == 2
    assert "augment" in capsys.readouterr().err
