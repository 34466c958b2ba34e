"""The same API on RGB 32x32, 28x28 and odd 25x25 images, 2 to 20 classes, unbalanced counts."""

import pytest
import torch

import diffaug
from conftest import draw_shapes


@pytest.mark.parametrize("size, channels, counts", [
    ((32, 32), 3, [12, 5, 9]),
    ((28, 28), 1, [4 + (k % 3) for k in range(20)]),
    ((25, 25), 1, [10, 3]),
    ((25, 19), 3, [6, 6, 2, 8]),
])
def test_fit_sample_perturb_save_at_any_size(tmp_path, size, channels, counts):
    data = draw_shapes(counts, size=size, channels=channels, num_classes=len(counts))
    gen = diffaug.fit(data, steps=10, batch_size=16, progress=False, warmup=2)   # the API at each size, not quality
    c, (h, w) = channels, size
    assert gen.image_size == size and gen.channels == c and gen.num_classes == len(counts)
    x = gen.sample(per_class=2, steps=4)
    assert x.shape == (2 * len(counts), c, h, w) and x.dtype == torch.uint8
    p = gen.perturb(data.images[:5], data.labels[:5], strength=0.5, steps=4)
    assert p.shape == (5, c, h, w)
    # HWC numpy in works too (the layout albumentations and PIL use)
    assert gen.perturb(data.images[:2].permute(0, 2, 3, 1).numpy(), steps=2).shape == (2, c, h, w)
    gen.save(tmp_path / "g.safetensors")
    again = diffaug.Generator.load(tmp_path / "g.safetensors")
    assert torch.equal(again.sample(per_class=1, steps=3), gen.sample(per_class=1, steps=3))


def test_channels_mismatch_is_named():
    data = draw_shapes(3, size=(16, 16), channels=3, num_classes=2)
    gen = diffaug.fit(data, steps=2, batch_size=4, progress=False, warmup=1)
    with pytest.raises(diffaug.MismatchError, match="1x16x16 .* makes 3x16x16"):
        gen.perturb(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))
