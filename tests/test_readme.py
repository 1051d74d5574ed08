"""The README's first Python snippet runs as pasted, offline, and classifies skimage's retina."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def first_python_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no ```python block"
    return blocks[0]


def test_readme_quick_start_runs_offline(tmp_path):
    snippet = first_python_snippet()
    assert "from_pretrained" in snippet and ".classify(" in snippet and len(snippet.strip().splitlines()) <= 5
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()  # the printed DataFrame: labels, index name, image_0 + 3 probabilities
    assert lines[-3].split() == ["normal", "glaucoma", "cataract"] and lines[-1].split()[0] == "image_0"
    row = lines[-1]
    assert abs(sum(float(v) for v in row.split()[1:]) - 1.0) < 1e-4
    assert (tmp_path / "my-model" / "model.safetensors").is_file()
