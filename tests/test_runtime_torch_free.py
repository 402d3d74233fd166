"""The runtime stage never imports torch: importing every module and running upscale + check."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

SCRIPT = r"""
import importlib, importlib.abc, pkgutil, sys, warnings
attempts = []

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            attempts.append(name)  # recorded even when the importer swallows the error
            raise ImportError("torch is blocked in this test")

sys.meta_path.insert(0, NoTorch())
sys.path.insert(0, TESTS)
import srq.runtime
mods = [m.name for m in pkgutil.iter_modules(srq.runtime.__path__)]
for m in mods:
    importlib.import_module("srq.runtime." + m)
from srq.pipeline import cli

from pathlib import Path
import numpy as np
from test_runtime_nets import make_sr_onnx
from srq.imaging.io import write_image
from srq.imaging.datasets import open_dataset
from srq.runtime.check import run_check
from srq.runtime.gates import standard_gates
from srq.runtime.engine import open_engine
from srq.runtime.trt_engine import trt_available

tmp = Path(OUT)
model = make_sr_onnx(tmp / "m.onnx", (16, 16))
write_image(tmp / "a.png", np.random.default_rng(0).random((20, 30, 3)))
assert cli.main(["upscale", str(model), str(tmp / "a.png"), "--out", str(tmp / "o")]) == 0
with open_engine(model) as fp, open_engine(model) as q:
    report = run_check(fp, q, open_dataset("builtin:demo", 2), 2, standard_gates(0.3, None, 0.1),
                       tmp / "rep", progress=False)
trt_available()
assert report.passed, report.failures
print("modules", len(mods), "attempts", attempts, "loaded", "torch" in sys.modules)
"""


def test_runtime_and_upscale_never_import_torch(tmp_path):
    code = f"TESTS = {str(TESTS)!r}\nOUT = {str(tmp_path)!r}\n" + SCRIPT
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "attempts [] loaded False" in r.stdout, r.stdout
    assert int(r.stdout.split()[1]) >= 10  # every runtime module was imported
