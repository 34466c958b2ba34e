"""The examples run as documented (with the session's generator, to keep CI short)."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("script", ["torchvision_pipeline.py", "hf_expand.py", "albumentations_pipeline.py"])
def test_example_runs(script, digits_gen_file):
    r = subprocess.run([sys.executable, str(EXAMPLES / script), "--gen", str(digits_gen_file)],
                       capture_output=True, text=True, timeout=300, cwd=EXAMPLES)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "test accuracy" in r.stdout
