"""The Generator artifact: sampling, perturbing, and safe save/load."""

import copy
import pickle

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import diffaug
from diffaug import DataError, Generator, GeneratorFileError, MismatchError


def flat(x):
    return x.reshape(len(x), -1).float().numpy() / 255.0


@pytest.fixture(scope="module")
def real_classifier(digits_train):
    return LogisticRegression(max_iter=3000).fit(flat(digits_train.images), digits_train.labels.numpy())


def test_samples_are_uint8_of_the_data_size_and_the_asked_class(digits_gen, real_classifier):
    x = digits_gen.sample(per_class=30, seed=0)
    assert x.dtype == torch.uint8 and x.shape == (300, 1, 8, 8)
    labels = np.repeat(np.arange(10), 30)
    assert (real_classifier.predict(flat(x)) == labels).mean() >= 0.85


def test_sampling_is_seeded(digits_gen):
    a = digits_gen.sample([3, 4, 5], seed=7, steps=8)
    assert torch.equal(a, digits_gen.sample([3, 4, 5], seed=7, steps=8))
    assert not torch.equal(a, digits_gen.sample([3, 4, 5], seed=8, steps=8))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_other_samplers_make_digits(digits_gen, real_classifier, sampler):
    x = digits_gen.sample(per_class=10, sampler=sampler, steps=30, seed=1)
    assert (real_classifier.predict(flat(x)) == np.repeat(np.arange(10), 10)).mean() >= 0.75


def test_class_names_work_as_labels(digits_gen):
    assert torch.equal(digits_gen.sample(["7", "1"], steps=5), digits_gen.sample([7, 1], steps=5))


def test_bad_labels_are_refused(digits_gen):
    with pytest.raises(MismatchError, match="label 10 is not a class"):
        digits_gen.sample([10])
    with pytest.raises(MismatchError, match="unknown class name 'cat'"):
        digits_gen.sample(["cat"])
    with pytest.raises(DataError, match="either labels or per_class"):
        digits_gen.sample()


def test_perturb_keeps_the_image_at_low_strength_and_changes_it_at_high(digits_gen, digits_test):
    x, y = digits_test.images[:100], digits_test.labels[:100]
    weak = digits_gen.perturb(x, y, strength=0.1, seed=0)
    strong = digits_gen.perturb(x, y, strength=0.9, seed=0)
    assert weak.dtype == torch.uint8 and weak.shape == x.shape
    d_weak = (weak.float() - x.float()).abs().mean()
    d_strong = (strong.float() - x.float()).abs().mean()
    assert d_weak < 20 and d_strong > 2 * d_weak
    unconditional = digits_gen.perturb(x, strength=0.3, seed=0)   # no labels: the null class
    assert unconditional.shape == x.shape and not torch.equal(unconditional, x)


def test_perturb_checks_size_and_labels(digits_gen):
    with pytest.raises(MismatchError, match=r"images are 1x9x9 .* makes 1x8x8; resize"):
        digits_gen.perturb(torch.zeros(2, 1, 9, 9, dtype=torch.uint8))
    with pytest.raises(DataError, match="2 images but 3 labels"):
        digits_gen.perturb(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), [1, 2, 3])
    with pytest.raises(DataError, match="strength must lie in"):
        digits_gen.perturb(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), strength=1.5)


def test_save_load_gives_bit_identical_samples(digits_gen, digits_gen_file):
    loaded = Generator.load(digits_gen_file)
    assert loaded.config == digits_gen.config
    assert torch.equal(loaded.sample(per_class=3, seed=5), digits_gen.sample(per_class=3, seed=5))
    assert loaded.fingerprint == digits_gen.fingerprint


def test_save_refuses_to_overwrite(digits_gen, digits_gen_file):
    before = digits_gen_file.read_bytes()
    with pytest.raises(diffaug.DiffaugError, match="already exists"):
        digits_gen.save(digits_gen_file)
    assert digits_gen_file.read_bytes() == before


def test_foreign_truncated_and_pickle_files_are_refused(tmp_path, digits_gen_file):
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(GeneratorFileError, match="not a diffaug generator"):
        Generator.load(tmp_path / "other.safetensors")

    data = digits_gen_file.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(GeneratorFileError, match="not a readable safetensors"):
        Generator.load(tmp_path / "cut.safetensors")

    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('unpickled!')",))
    (tmp_path / "evil.safetensors").write_bytes(pickle.dumps(Boom()))
    torch.save({"w": torch.zeros(3)}, tmp_path / "torch.pt")
    for name in ("evil.safetensors", "torch.pt"):
        with pytest.raises(GeneratorFileError, match="not a readable safetensors"):
            Generator.load(tmp_path / name)
    with pytest.raises(GeneratorFileError, match="no such generator file"):
        Generator.load(tmp_path / "missing.safetensors")


def test_training_lowers_the_loss(digits_gen):
    curve = digits_gen.config["train"]["loss_curve"]
    first, last = curve[0][1], np.mean([loss for _, loss in curve[-4:]])
    assert last < 0.7 * first


@pytest.mark.parametrize("sampler, guidance", [("dpmpp_2m", 2.0), ("ddim", 1.0), ("ddpm", 2.0)])
def test_an_image_does_not_depend_on_the_batch_it_is_made_in(digits_gen, sampler, guidance):
    """Every image's noise is its own stream (seed, index): batch sizes 1, 7 and 64 give the same images,
    for the deterministic sampler and for the ancestral one, which draws fresh noise at every step."""
    labels = np.arange(70) % 10
    runs = [digits_gen.sample(labels, sampler=sampler, guidance=guidance, steps=6, seed=3, batch_size=b)
            for b in (1, 7, 64)]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    # a part of the job, told its rows' places, makes exactly those rows
    part = digits_gen.sample(labels[20:33], sampler=sampler, guidance=guidance, steps=6, seed=3,
                             indices=range(20, 33))
    assert torch.equal(part, runs[0][20:33])


def test_a_perturbation_does_not_depend_on_the_batch_and_copies_differ(digits_gen, digits_train):
    x, y = digits_train.images[:30], digits_train.labels[:30]
    one = digits_gen.perturb(x, y, strength=0.5, steps=6, sampler="ddpm", seed=1, batch_size=1)
    assert torch.equal(one, digits_gen.perturb(x, y, strength=0.5, steps=6, sampler="ddpm", seed=1, batch_size=64))
    tail = digits_gen.perturb(x[9:], y[9:], strength=0.5, steps=6, sampler="ddpm", seed=1, indices=range(9, 30))
    assert torch.equal(tail, one[9:])
    other = digits_gen.perturb(x, y, strength=0.5, steps=6, sampler="ddpm", seed=1, copy=1)
    assert not torch.equal(other, one)


def test_bad_indices_are_refused(digits_gen):
    with pytest.raises(DataError, match="3 images but 2 indices"):
        digits_gen.sample([1, 2, 3], indices=[0, 1])
    with pytest.raises(DataError, match="indices"):
        digits_gen.sample([1, 2], indices=[0, -1])


def test_graphed_sampling_pads_calls_to_power_of_two_graphs_and_keeps_few(monkeypatch):
    """GraphedForward's bookkeeping, checked on the CPU with a stand-in for the CUDA graph (a replay recomputes
    the static output from the static inputs, as a captured graph does): a call of n images replays the graph of
    the next power of two, padded; a call of another size in that octave reuses it; at most max_graphs are kept."""
    from diffaug.diffusion.fastpath import GraphedForward, graph_batch

    assert [graph_batch(n) for n in (1, 2, 3, 4, 5, 1000, 1024, 1025)] == [1, 2, 4, 4, 8, 1024, 1024, 2048]

    def fn(z, t, y):
        return z * 2 + t[:, None, None, None] + y[:, None, None, None]

    captured = []

    def capture(self, static):
        out = fn(*static)
        captured.append(len(static[0]))
        return type("Graph", (), {"replay": lambda _: out.copy_(fn(*static))})(), static, out

    monkeypatch.setattr(GraphedForward, "_capture", capture)
    graphed = GraphedForward(fn, max_graphs=2)
    z, t, y = torch.randn(8, 1, 4, 4), torch.rand(8), torch.arange(8)
    assert torch.equal(graphed(z[:6], t[:6], y[:6]), fn(z[:6], t[:6], y[:6]))   # padded into a batch-8 graph
    assert torch.equal(graphed(z, t, y), fn(z, t, y))
    assert torch.equal(graphed(z[:5], t[:5], y[:5]), fn(z[:5], t[:5], y[:5]))   # the same graph again
    assert captured == [8]
    assert torch.equal(graphed(z[:3], t[:3], y[:3]), fn(z[:3], t[:3], y[:3]))   # not 8 rows for 3: a batch-4 graph
    graphed(torch.randn(2, 1, 5, 5), torch.rand(2), torch.arange(2))            # another image shape
    assert captured == [8, 4, 2] and len(graphed.graphs) == 2                   # the oldest capture dropped
    cl = torch.randn(3, 2, 4, 4).contiguous(memory_format=torch.channels_last)
    assert torch.equal(graphed(cl, t[:3], y[:3]), fn(cl, t[:3], y[:3]))
    assert graphed.graphs[next(reversed(graphed.graphs))][1][0].is_contiguous(memory_format=torch.channels_last)


def test_sampling_batch_by_device_and_image_size():
    from diffaug.generator import BATCH, sampling_batch

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert sampling_batch(cpu, (32, 32)) == sampling_batch(cpu, (512, 512)) == BATCH
    assert [sampling_batch(cuda, hw) for hw in ((8, 8), (28, 28), (32, 32), (64, 64), (128, 128), (2048, 2048))] \
        == [2048, 1024, 1024, 256, 64, 1]


def test_sampling_compiles_on_cuda_only_past_its_break_even():
    from diffaug.diffusion.step import SAMPLING_COMPILE_PAYS_FROM_ROWS as rows, sampling_compile_pays

    cuda = torch.device("cuda")
    assert not sampling_compile_pays(torch.device("cpu"), 10 * rows)
    assert not sampling_compile_pays(cuda, None) and not sampling_compile_pays(cuda, rows - 1)
    assert sampling_compile_pays(cuda, rows)
    assert 13_000 * 20 * 2 < rows < 15_000 * 20 * 2   # ~14,000 images at 20 guided steps (docs/measured.md)


def test_banks_and_datasets_decide_compilation_for_the_whole_job_not_per_call(digits_gen, digits_train, tmp_path,
                                                                              monkeypatch):
    """SampleBank.build and the HF adapters make their images in many sampling calls; whether compiling pays is
    asked for the whole job's network rows (Generator.job), and a plain call outside a job is asked for its own:
    exactly the rows the network then runs (guided steps two, steps outside the guidance interval one)."""
    import datasets
    from diffaug import generator
    from diffaug.hf import expand_dataset, perturb_dataset, to_hf_dataset

    asked, ran = [], [0]
    monkeypatch.setattr(generator, "sampling_compile_pays", lambda device, rows: asked.append(rows) or False)
    hook = digits_gen.model.register_forward_pre_hook(lambda m, inputs: ran.__setitem__(0, ran[0] + len(inputs[0])))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))   # no rows cached by other tests
    rows = torch.cat([torch.nonzero(digits_train.labels == c)[:1, 0] for c in range(10)])   # one image per class
    data = diffaug.ImageData(digits_train.images[rows], digits_train.labels[rows], digits_train.class_names)
    ds = to_hf_dataset(data)
    jobs = {   # batches of 4 (never one image: the CPU runs a lone image as two rows)
        "bank": lambda: diffaug.SampleBank.build(digits_gen, tmp_path / "bank", per_class=3, data=data, copies=2,
                                                 strength=(0.2, 0.6), steps=5, batch_size=4, progress=False),
        "expand": lambda: expand_dataset(ds, digits_gen, per_class=2, steps=5, batch_size=4, progress=False),
        "perturb": lambda: perturb_dataset(ds, digits_gen, copies=2, strength=0.5, steps=5, batch_size=4,
                                           progress=False),
        "interval": lambda: digits_gen.sample([0, 1, 2, 3], steps=20, guidance_interval=(0.5, 10.0)),
        "unguided": lambda: digits_gen.sample([0, 1, 2, 3], steps=7, guidance=1.0),
    }
    calls = {"bank": 14, "expand": 5, "perturb": 6, "interval": 1, "unguided": 1}
    counted = {}
    try:
        for name, job in jobs.items():
            asked.clear()
            ran[0] = 0
            job()
            assert len(asked) == calls[name] and set(asked) == {ran[0]}, (name, asked, ran[0])
            counted[name] = ran[0]
    finally:
        hook.remove()
    assert 4 * 20 < counted["interval"] < 4 * 20 * 2   # some steps guided, not all
    assert counted["unguided"] == 4 * 7


def test_bad_compile_setting_is_refused(digits_gen):
    gen = copy.copy(digits_gen)
    gen.compile = "yes"
    with pytest.raises(DataError, match="compile must be True, False or None"):
        gen.sample([0], steps=2)


def test_guidance_in_a_limited_interval(digits_gen, real_classifier):
    """Guidance only at noise levels in (low, high] (Kynkaanniemi et al. 2024): an interval holding every step is
    guidance everywhere, one holding none is no guidance, and in between the unguided steps run one pass."""
    rows = []
    hook = digits_gen.model.register_forward_pre_hook(lambda m, inputs: rows.append(len(inputs[0])))
    try:
        labels = list(range(10)) * 3
        everywhere = digits_gen.sample(labels, steps=10, seed=4, guidance_interval=None)
        full_rows, rows[:] = sum(rows), []
        assert torch.equal(digits_gen.sample(labels, steps=10, seed=4, guidance_interval=(0, float("inf"))),
                           everywhere)
        rows.clear()
        assert torch.equal(digits_gen.sample(labels, steps=10, seed=4, guidance_interval=(1e6, 1e7)),
                           digits_gen.sample(labels, steps=10, seed=4, guidance=1.0))
        rows.clear()
        middle = digits_gen.sample(labels, steps=10, seed=4, guidance_interval=(0.3, 5.0))
        assert len(labels) * 10 < sum(rows) < full_rows   # some steps guided (2 rows per image), some not
        assert not torch.equal(middle, everywhere)
        assert (real_classifier.predict(flat(middle)) == labels).mean() > 0.8
    finally:
        hook.remove()
    with pytest.raises(DataError, match="guidance_interval"):
        digits_gen.sample([0], guidance_interval=(2.0, 1.0))
