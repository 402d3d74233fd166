"""The package installs both ways and its CLI runs from the installed copy."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import srq

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["imaging", "zoo", "calib", "export", "runtime", "pipeline"]


def test_editable_install_maps_stage_folders_under_srq():
    """`pip install -e .` (the README's setup) serves srq.<stage> from the top-level folders."""
    import importlib

    for stage in STAGES:
        mod = importlib.import_module(f"srq.{stage}")
        assert Path(mod.__file__).resolve().parent == ROOT / stage


def test_install_squats_on_no_generic_top_level_name(tmp_path):
    """Installed, the stages are reachable only as srq.<stage>, never as `pipeline`, `export`..."""
    code = ("import importlib.util as u; "
            f"print([n for n in {STAGES!r} if u.find_spec(n) is not None])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, check=True)
    assert out.stdout.strip() == "[]"


def test_installed_cli_reports_version():
    out = subprocess.run(["srq", "--version"], capture_output=True, text=True,
                         env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"srq {srq.__version__}"


def test_wheel_install_runs_cli(tmp_path):
    """`pip install .` (a real wheel) carries every stage package; its CLI runs without the tree."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "wheel"), str(ROOT)], check=True)
    (whl,) = (tmp_path / "wheel").glob("srq-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    for stage in STAGES:
        assert f"srq/{stage}/__init__.py" in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(whl)], check=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c",
                          "import srq.pipeline.cli as c, sys; print(c.__file__); sys.exit(c.main(['--help']))"],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0].startswith(str(target))
    assert "super-resolution" in out.stdout
