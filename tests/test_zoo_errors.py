"""Bad checkpoints and bad requests fail with SrqError naming the file and the cause (API and CLI)."""

from __future__ import annotations

import shutil

import pytest
import torch
from spandrel.architectures.Compact import Compact

import srq.zoo.builtin as builtin
from srq.errors import SrqError
from srq.pipeline.cli import main
from srq.zoo import load_model
from srq.zoo.archs.edsr import EDSR


def _edsr_file(tmp_path):
    path = tmp_path / "edsr_baseline_x2.pt"
    torch.save(EDSR(n_resblocks=2, n_feats=16, scale=2).state_dict(), path)
    return path


def test_missing_file(tmp_path):
    with pytest.raises(SrqError, match=r"nope\.pth: no such file"):
        load_model(tmp_path / "nope.pth")


def test_truncated_and_junk_files(tmp_path):
    good = _edsr_file(tmp_path)
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors header at all")
    with pytest.raises(SrqError, match=r"cut\.pt: truncated or corrupt"):
        load_model(tmp_path / "cut.pt")
    with pytest.raises(SrqError, match=r"junk\.safetensors: truncated or corrupt"):
        load_model(tmp_path / "junk.safetensors")


class Payload:
    pass


def test_unsafe_pickle_is_refused(tmp_path):
    torch.save({"weight": torch.zeros(1), "hook": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(SrqError, match=r"evil\.pth: refused to load.*weights_only"):
        load_model(tmp_path / "evil.pth")


def test_unknown_builtin_name_lists_the_closest():
    with pytest.raises(SrqError, match=r"swinir-lite-x2: .*did you mean swinir-light-x2"):
        load_model("swinir-lite-x2")


def test_builtin_without_its_file(tmp_path, monkeypatch):
    monkeypatch.setattr(builtin, "WEIGHTS_DIR", tmp_path)
    name = next(iter(builtin.BUILTIN))
    with pytest.raises(SrqError, match=rf"{name}\.safetensors: weights of built-in model .* not installed"):
        load_model(name)


def test_keys_that_fit_no_architecture(tmp_path):
    torch.save({"encoder.weight": torch.zeros(4, 4)}, tmp_path / "other.pth")
    with pytest.raises(SrqError, match=r"other\.pth: the tensor names .* fit no supported architecture; "
                                       r"supported: IMDN, PAN, RFDN, CARN-M, FSRCNN, EDSR, SwinIR"):
        load_model(tmp_path / "other.pth")


def test_architecture_spandrel_knows_but_srq_does_not(tmp_path):
    torch.save(Compact(num_feat=8, num_conv=2, upscale=2).state_dict(), tmp_path / "compact.pth")
    with pytest.raises(SrqError, match=r"compact\.pth: detected as Compact, which srq does not support"):
        load_model(tmp_path / "compact.pth")


def test_tensors_that_do_not_fit_the_detected_architecture(tmp_path):
    sd = EDSR(n_resblocks=2, n_feats=16, scale=2).state_dict()
    sd["body.0.body.0.weight"] = torch.zeros(16, 16, 5, 5)
    torch.save(sd, tmp_path / "bent.pt")
    with pytest.raises(SrqError, match=r"bent\.pt: looks like EDSR but the tensors do not fit it"):
        load_model(tmp_path / "bent.pt")


def test_wrong_scale_for_a_fixed_scale_checkpoint(tmp_path):
    with pytest.raises(SrqError, match=r"edsr_baseline_x2\.pt: this EDSR checkpoint is x2; x4 was requested"):
        load_model(_edsr_file(tmp_path), scale=4)


@pytest.mark.shared_data
def test_scale_errors_on_real_checkpoints(shared_data, tmp_path):
    weights = shared_data / "weights"
    with pytest.raises(SrqError, match=r"IMDN_x2\.pth: this IMDN checkpoint is x2; x4 was requested"):
        load_model(weights / "IMDN/IMDN_x2.pth", scale=4)
    with pytest.raises(SrqError, match=r"carn_m\.pth: CARN-M is one network for x2/x3/x4: pass the scale"):
        load_model(weights / "CARN/carn_m.pth")
    with pytest.raises(SrqError, match=r"carn_m\.pth: CARN-M with these weights runs at x2/x3/x4; x5"):
        load_model(weights / "CARN/carn_m.pth", scale=5)
    with pytest.raises(SrqError, match=r"fsrcnn_x3\.pth: the file says x3 .* x2 was requested"):
        load_model(weights / "FSRCNN/fsrcnn_x3.pth", scale=2)
    shutil.copy(weights / "FSRCNN/fsrcnn_x3.pth", tmp_path / "fsrcnn.pth")
    with pytest.raises(SrqError, match=r"fsrcnn\.pth: FSRCNN weights do not record their scale"):
        load_model(tmp_path / "fsrcnn.pth")
    assert load_model(tmp_path / "fsrcnn.pth", scale=3).scale == 3


def test_cli_models_lists_every_architecture(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for arch in ("IMDN", "PAN", "RFDN", "CARN-M", "FSRCNN", "EDSR", "SwinIR"):
        assert f"\n{arch} " in out
    assert "swinir-light-x2" in out


def test_cli_models_unknown_architecture_names_the_closest(capsys):
    assert main(["models", "swinr"]) == 2
    assert "unknown architecture 'swinr': did you mean SwinIR" in capsys.readouterr().err
