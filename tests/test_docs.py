"""README.md runs as written: every Python block in order in one namespace (as a reader pastes them into one
session; docs/guide.md's blocks after it), every `diffaug` command of its shell blocks (and of docs/*.md, where the
longer pages went; `my_folder` is a folder of mixed images the test writes); and every .md file the code or the
README cites exists.

The code is executed unchanged. Only the sizes that make the documented calls take minutes or hours on two
CPU cores are capped, by wrapping the library functions the snippets call (fit steps, bank and expansion
sizes, evaluation regimes, seeds and parallel jobs); names, imports, signatures and the objects passed between the
blocks are exactly the README's.
"""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

import diffaug
import diffaug.evaluation
import diffaug.fitting
import diffaug.adapters.hf
import diffaug.hf
from diffaug.adapters.bank import SampleBank
from diffaug.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
GUIDE = (ROOT / "docs" / "guide.md").read_text()   # the README's continuation: its Python runs after the README's
PAGES = [README] + [p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def blocks(language, pages=PAGES):
    return [code for page in pages for lang, code in BLOCK.findall(page) if lang == language]


@pytest.fixture
def capped(monkeypatch, tmp_path):
    """Run in a fresh folder with the README's long-running sizes capped."""
    monkeypatch.chdir(tmp_path)
    fit, build, expand, evaluate = diffaug.fit, SampleBank.build, diffaug.hf.expand_dataset, diffaug.evaluate

    def small_fit(data, preset="tiny", steps=None, **kw):
        return fit(data, preset, min(steps or 20, 20), **{"batch_size": 16, **kw})

    def small_build(gen, path, per_class=100, **kw):
        return build(gen, path, per_class=min(per_class, 4) if isinstance(per_class, int) else per_class,
                     **{**kw, "steps": 4})

    def small_expand(ds, gen, per_class=None, **kw):
        return expand(ds, gen, min(per_class, 3) if isinstance(per_class, int) else per_class, **{**kw, "steps": 4})

    def small_evaluate(data="digits", test=None, **kw):
        head = 3 if not kw.get("imbalance") else int(2 * kw["imbalance"])   # a long tail needs a head to fall from
        tiny = dict(per_class=(head,), seeds=1, gen_steps=10, gen_batch_size=16, classifier_steps=10,
                    synthetic_per_class=4, perturb_copies=1, sample_steps=2, batch_size=16, cas_steps=10,
                    reference_steps=10,   # the network menu's choice has its own test (test_opponents.py)
                    classifier_menu=kw.get("classifier_menu", ("smallcnn",)))
        # one process: spawning workers costs seconds a command, and the process pool has its own tests
        # (test_evaluation.py's n_jobs="auto", test_unlabeled.py's n_jobs=2)
        return evaluate(data, test, **{**kw, **tiny, "n_jobs": 1})

    monkeypatch.setattr(diffaug, "fit", small_fit)
    monkeypatch.setattr(diffaug.fitting, "fit", small_fit)   # what the CLI calls
    monkeypatch.setattr(SampleBank, "build", staticmethod(small_build))
    monkeypatch.setattr(diffaug.hf, "expand_dataset", small_expand)
    monkeypatch.setattr(diffaug.adapters.hf, "expand_dataset", small_expand)   # what `diffaug expand` calls
    monkeypatch.setattr(diffaug, "evaluate", small_evaluate)
    monkeypatch.setattr(diffaug.evaluation, "evaluate", small_evaluate)
    from test_images import write_folder
    write_folder(tmp_path / "my_folder", per_class=8)   # the reader's own folder, as it comes (mixed sizes, RGBA, ...)
    return tmp_path


def test_every_python_block_of_the_readme_runs_in_order(capped):
    code = blocks("python", [README, GUIDE])
    assert len(blocks("python", [README])) >= 5   # API, torchvision, albumentations, datasets, evaluation
    namespace = {"__name__": "__readme__"}
    for i, block in enumerate(code):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
        except Exception as e:   # name the block: a README failure must be easy to find
            raise AssertionError(f"README/guide python block {i + 1} failed: {type(e).__name__}: {e}\n{block}") from e
    assert namespace["x"].shape[0] == 128 and namespace["y"].shape == (128,)   # the DataLoader batch
    assert namespace["batch"] is not None and (capped / "pipeline.json").exists()
    assert len(namespace["bigger"]) == len(namespace["hf_train"]) + 30
    assert "| 3 |" in namespace["result"].table()


def test_every_diffaug_command_of_the_readme_runs(capped, capsys):
    commands = [shlex.split(line.split("#")[0]) for block in blocks("bash") for line in block.splitlines()
                if line.startswith("diffaug ")]
    assert any(c[1] == "fit" for c in commands) and any(c[1] == "evaluate" for c in commands)
    # Fashion-MNIST's commands run on the built-in digits: the suite never depends on the Debian package being
    # installed (and its 60,000-image pool made the capped command the suite's slowest, 112 s); tests/test_data.py
    # reads Fashion-MNIST's IDX files from a folder it writes
    # the reader's own unlabelled images, which the README's `--unlabeled unlabeled.npz` stands for
    images = diffaug.load_data("digits", "train").images[:200]
    np.savez(capped / "unlabeled.npz", images=images.permute(0, 2, 3, 1).numpy())
    for argv in commands:
        argv = ["digits" if a == "fashion-mnist" else a for a in argv]
        if not torch.cuda.is_available() and "--device" in argv:   # the same command on this machine's CPU
            i = argv.index("--device")
            argv = argv[:i] + argv[i + 2:]
        assert main(argv[1:]) == 0, f"`{' '.join(argv)}` failed: {capsys.readouterr().err}"


def test_files_the_code_cites_exist():
    cited = []
    for path in [*ROOT.glob("diffaug/**/*.py"), *ROOT.glob("benchmarks/*.py"), *ROOT.glob("examples/*.py")]:
        for name in re.findall(r"[\w./-]+\.md\b", path.read_text()):
            if "/" in name and not name.startswith("results"):
                cited.append((path.relative_to(ROOT), name))
    assert cited, "the scan found nothing: the pattern is broken"
    missing = [(str(src), name) for src, name in cited
               if not (ROOT / name.lstrip("./")).exists() and not (ROOT / src.parent / name).exists()
               and not name.endswith("/results.md") and "OUT" not in name]
    assert not missing, f"cited but not in the repository: {missing}"


def test_pages_the_readme_links_exist():
    links = re.findall(r"\]\(([^)#]+\.(?:md|png))\)", README)
    assert "docs/measured.md" in links and "docs/evaluation.md" in links
    assert not [link for link in links if not (ROOT / link).exists()]
