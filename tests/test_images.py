"""A folder of images as it comes (mixed sizes, RGBA, palette, CMYK, 16-bit, grayscale beside RGB, JPEGs with an EXIF
rotation) goes through every journey with --image-size, and each conversion does what a photo viewer shows; real
files, written by the tests."""

import numpy as np
import pytest
import torch
from PIL import Image

import diffaug
from diffaug import DataError
from diffaug.cli import main
from diffaug.images import resize_tensor, to_array


def write_folder(root, per_class: int = 4):
    """Two classes of mixed files: class 'red' holds reddish images, class 'blue' bluish ones, in every format."""
    rng = np.random.default_rng(0)
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            w, h = int(rng.integers(20, 60)), int(rng.integers(20, 60))
            base = np.zeros((h, w, 3), np.uint8) + np.array(colour, np.uint8)
            base[h // 3: 2 * h // 3, w // 3: 2 * w // 3] = 255 - base[0, 0]   # a centred square of another colour
            im = Image.fromarray(base)
            kind = i % 4
            if kind == 0:
                im.save(folder / f"{i}.png")                                  # RGB PNG
            elif kind == 1:
                rgba = im.convert("RGBA")
                rgba.putalpha(Image.fromarray(np.full((h, w), 255, np.uint8)))
                rgba.save(folder / f"{i}.png")                                # RGBA PNG, opaque
            elif kind == 2:
                im.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / f"{i}.png")   # palette PNG
            else:
                exif = Image.Exif()
                exif[0x0112] = 6   # orientation: rotate 90 degrees clockwise to display
                im.save(folder / f"{i}.jpg", quality=95, exif=exif)          # JPEG with an EXIF rotation
        Image.fromarray(np.full((30, 40), 128, np.uint8)).save(folder / "grey.png")   # grayscale beside RGB
    return root


def test_each_conversion_on_real_files(tmp_path):
    # transparency composited on white, or on the colour asked for
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255   # the top half opaque red, the bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as im:
        assert to_array(im)[0, 0].tolist() == [200, 0, 0] and to_array(im)[3, 0].tolist() == [255, 255, 255]
        assert to_array(im, background=(0, 0, 255))[3, 0].tolist() == [0, 0, 255]
    # EXIF orientation applied: a 30 wide, 10 high JPEG shown rotated is 10 wide, 30 high
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((10, 30, 3), np.uint8)).save(tmp_path / "r.jpg", exif=exif)
    with Image.open(tmp_path / "r.jpg") as im:
        assert to_array(im).shape == (30, 10, 3)
    # palette, CMYK, 16-bit and bilevel images come out as RGB or 8-bit grayscale
    Image.fromarray(np.full((5, 5, 3), 90, np.uint8)).convert("CMYK").save(tmp_path / "c.jpg")
    Image.fromarray(np.full((5, 5), 65535, np.uint16)).save(tmp_path / "i16.png")
    Image.fromarray(np.eye(5, dtype=bool)).save(tmp_path / "b.png")
    with Image.open(tmp_path / "c.jpg") as c, Image.open(tmp_path / "i16.png") as i16, \
            Image.open(tmp_path / "b.png") as b:
        assert to_array(c).shape == (5, 5, 3) and abs(int(to_array(c)[2, 2, 0]) - 90) < 6
        assert to_array(i16).dtype == np.uint8 and to_array(i16).max() == 255
        assert to_array(b).tolist() == (np.eye(5) * 255).astype(np.uint8).tolist()
    # image_size: the shorter side to N, antialiased, then the centre N x N (torchvision's Resize + CenterCrop)
    stripes = np.zeros((40, 80), np.uint8)
    stripes[:, ::2] = 255
    out = to_array(Image.fromarray(stripes), size=20)
    assert out.shape == (20, 20) and 100 < out.mean() < 155 and out.std() < 30   # averaged, not aliased
    from torchvision.transforms import v2
    ref = v2.Compose([v2.Resize(20, antialias=True), v2.CenterCrop(20)])(torch.from_numpy(stripes)[None])
    assert abs(float(ref.float().mean()) - float(out.mean())) < 3
    assert resize_tensor(torch.from_numpy(stripes)[None, None], 20).shape == (1, 1, 20, 20)


def test_a_mixed_folder_needs_image_size_and_loads_with_it(tmp_path):
    root = write_folder(tmp_path / "mine")
    with pytest.raises(DataError, match=r"mixed sizes .*image_size=N \(CLI: --image-size N\)"):
        diffaug.load_data(root)
    data = diffaug.load_data(root, image_size=32)
    assert data.channels == 3 and data.size == (32, 32) and data.class_counts() == [5, 5]
    assert data.class_names == ["blue", "red"]
    red = data.images[data.labels == 1].float().mean((0, 2, 3))
    assert red[0] > red[2]   # the colours survived every format (the grey image pulls both towards 128)
    # the corner pixel of a red image (not the centred square) is red whichever format it came in
    corners = data.images[data.labels == 1][:, :, 1, 1].float()
    assert (corners[:4, 0] > corners[:4, 2] + 100).all()
    # an unreadable file is named, with its path, in one line
    (root / "red" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png"):
        diffaug.load_data(root, image_size=32)


def test_a_folder_as_it_comes_goes_through_fit_sample_expand_and_evaluate(tmp_path, capsys):
    pytest.importorskip("datasets")
    root = write_folder(tmp_path / "mine", per_class=6)
    gen = tmp_path / "mine.safetensors"
    assert main(["fit", str(root), "--out", str(gen), "--steps", "4", "--quiet"]) == 2
    assert "--image-size" in capsys.readouterr().err and not gen.exists()
    assert main(["fit", str(root), "--image-size", "16", "--out", str(gen), "--steps", "4", "--quiet"]) == 0
    assert diffaug.Generator.load(gen).image_size == (16, 16)
    assert main(["sample", str(gen), "--per-class", "2", "--out", str(tmp_path / "grid.png"), "--sample-steps",
                 "2"]) == 0
    assert Image.open(tmp_path / "grid.png").size[0] >= 32
    assert main(["expand", str(root), "--image-size", "16", "--gen", str(gen), "--per-class", "2",
                 "--sample-steps", "2", "--out", str(tmp_path / "expanded"), "--quiet"]) == 0
    import datasets
    assert len(datasets.load_from_disk(str(tmp_path / "expanded"))) == 14 + 4
    assert main(["evaluate", str(root), "--image-size", "16", "--per-class", "2", "--seeds", "1", "--gen-steps", "4",
                 "--classifier-steps", "4", "--batch-size", "8", "--synthetic-per-class", "2", "--sample-steps", "2",
                 "--classical", "crop", "--no-metrics", "--out", str(tmp_path / "report"), "--quiet"]) == 0
    assert (tmp_path / "report" / "results.md").exists()
