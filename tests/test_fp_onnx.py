"""FP ONNX export: ONNX Runtime matches PyTorch (max abs diff <= 1e-4) on real image crops at two sizes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file

from srq.errors import SrqError
from srq.export.fp_onnx import OPSET, export_fp_onnx
from srq.imaging.io import read_image
from srq.zoo import load_model
from srq.zoo.archs.edsr import EDSR
from srq.zoo.archs.swinir import swinir_light

SIZES = [(32, 32), (48, 40)]
SHARED = [("IMDN/IMDN_x2.pth", None), ("PAN/PANx4_DF2K.pth", None), ("RFDN/RFDN_AIM.pth", None),
          ("CARN/carn_m.pth", 2), ("FSRCNN/fsrcnn_x3.pth", None)]


def _crop(shared_data, hw, channels) -> torch.Tensor:
    lr = read_image(shared_data / "benchmarks/Set14/LR_bicubic/X2/baboonx2.png").rgb()
    x = torch.from_numpy(np.ascontiguousarray(lr[7:7 + hw[0], 11:11 + hw[1]])).permute(2, 0, 1)[None]
    return x[:, :1] if channels == 1 else x  # Y-only nets: any [0, 1] plane is a valid input


def _check_parity(model, hw, x, path) -> float:
    export_fp_onnx(model, hw, path)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == OPSET and not any(t.data_location for t in proto.graph.initializer)
    assert "Shape" not in {n.op_type for n in proto.graph.node}  # fully static graph
    assert {p.key: p.value for p in proto.metadata_props}["srq.fingerprint"] == model.fingerprint
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # atomic: no temp files left
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"lr": x.numpy()})[0]
    with torch.no_grad():
        want = model.module(x).numpy()
    assert got.shape == (1, model.in_channels, hw[0] * model.scale, hw[1] * model.scale)
    diff = float(np.abs(got - want).max())
    assert diff <= 1e-4
    return diff


@pytest.mark.shared_data
@pytest.mark.parametrize("hw", SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
@pytest.mark.parametrize(("rel", "scale"), SHARED, ids=[r for r, _ in SHARED])
def test_shared_models_parity(shared_data, tmp_path, rel, scale, hw):
    model = load_model(shared_data / "weights" / rel, scale)
    _check_parity(model, hw, _crop(shared_data, hw, model.in_channels), tmp_path / "out" / "fp.onnx")


@pytest.mark.shared_data
@pytest.mark.parametrize("hw", SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_edsr_baseline_parity(shared_data, tmp_path, hw):
    torch.manual_seed(0)
    torch.save(EDSR(n_resblocks=16, n_feats=64, scale=2).state_dict(), tmp_path / "edsr_baseline_x2.pt")
    model = load_model(tmp_path / "edsr_baseline_x2.pt")
    _check_parity(model, hw, _crop(shared_data, hw, 3), tmp_path / "out" / "fp.onnx")


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("hw", SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_swinir_light_parity_with_rebuilt_masks(shared_data, tmp_path, hw):
    """Module built for 64x64 masks; the export at another size must carry that size's masks."""
    save_file({k: v.contiguous() for k, v in swinir_light(2).state_dict().items()}, tmp_path / "light.safetensors")
    model = load_model(tmp_path / "light.safetensors")
    _check_parity(model, hw, _crop(shared_data, hw, 3), tmp_path / "out" / "fp.onnx")


def test_tile_not_a_multiple_of_the_window(tmp_path):
    save_file({k: v.contiguous() for k, v in swinir_light(2).state_dict().items()}, tmp_path / "light.safetensors")
    model = load_model(tmp_path / "light.safetensors")
    with pytest.raises(SrqError, match=r"tile 30x32 is not a multiple of 8 \(the SwinIR window size\)"):
        export_fp_onnx(model, (30, 32), tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()
