"""`make test` (make_fixtures.py without maintenance flags) never rewrites the tracked
testdata/fixtures.json, even when the built files differ from the recorded ones (a
generated fixture is not byte-reproducible across machines)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

from fixture_models import TESTDATA

SCRIPT = TESTDATA / "make_fixtures.py"


def test_plain_run_leaves_the_index_untouched(tmp_path):
    index = TESTDATA / "fixtures.json"
    shutil.copy(index, tmp_path / "fixtures.json")
    (tmp_path / "generated").mkdir()
    recorded = json.loads(index.read_text())["fixtures"]
    for entry in recorded.values():
        if entry["storage"] == "committed":
            shutil.copy(TESTDATA / entry["file"], tmp_path / entry["file"])
        else:   # "rebuilt on another machine": other bytes, so a refreshed index would differ
            shutil.copy(TESTDATA / "conv_chain.tflite", tmp_path / entry["file"])
    proc = subprocess.run([sys.executable, str(SCRIPT), "--testdata", str(tmp_path)],
                          capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NOT BUILT" not in proc.stdout and "built " not in proc.stdout, proc.stdout
    assert (tmp_path / "fixtures.json").read_bytes() == index.read_bytes()
