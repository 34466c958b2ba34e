"""The examples run as documented (with the session's generator, or a short fit, to keep CI short)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("script", ["torchvision_pipeline.py", "hf_expand.py", "albumentations_pipeline.py",
                                    "own_folder.py"])
def test_example_runs(script, digits_gen_file):
    args = ["--steps", "10", "--per-class", "6"] if script == "own_folder.py" else ["--gen", str(digits_gen_file)]
    if script in ("torchvision_pipeline.py", "albumentations_pipeline.py"):
        args += ["--bank-per-class", "20"]
    if script != "hf_expand.py":   # the classifier's epochs: the assertion needs a run, not a good classifier
        args += ["--epochs", "3"]
    r = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=300,
                       cwd=EXAMPLES)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "test accuracy" in r.stdout
    if script == "own_folder.py":   # the folder as it came: mixed sizes and formats, read at 32x32 RGB
        assert "3x32x32, 5 classes" in r.stdout
