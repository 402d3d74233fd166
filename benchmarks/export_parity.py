"""Export parity: the exported QDQ ONNX run by srq's ORT engine vs the fake-quantized PyTorch model (same recipe).

For each model (IMDN x2, the real checkpoint in ``../shared/data``; the built-in SwinIR-light x2)
and bit setting (W8A8, W4A4): phase-1 calibration (default ``sorted`` search; policy ``body`` for
IMDN, ``2dquant`` for SwinIR) on 32x32 crops of Set5 LR images 1-2, export for ORT at a 48x48
tile, then per image set 48x48 LR tiles (Set5 images 3-5 at (40, 40); builtin:demo, two tiles per
image) through ``srq.runtime.ort_engine.OrtEngine`` (``ORT_ENABLE_ALL``,
``session.x64quantprecision=1``) and through ``apply_recipe`` on a fresh load. Reported per set:
PSNR(engine, fake-quant) in dB (peak 1, outputs clipped to [0, 1], MSE over all tiles) and the
fraction of output values differing by more than 1/255.

``--first-conv-bits 8`` quantizes the first conv too (IMDN's ``fea_conv``; srq calibrate's option of
that name), so that no float op but the input QuantizeLinear precedes the first integer kernel;
``--include GLOB ...`` quantizes other modules on top of the policy; ``--bias-correction`` adds beta.
``--inject`` (IMDN only): also rerun the fake-quant model with the engine's own float output of
the FP first conv (``fea_conv``, read from the optimized graph ORT ran) in place of PyTorch's,
which isolates the float32 rounding of that FP layer as a cause (docs/export-parity.md).

Example (writes the table to stdout and the JSON record to --out)::

    .venv/bin/python benchmarks/export_parity.py --inject --out docs/export-parity.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from srq.calib.api import CalibConfig, calibrate
from srq.calib.recipe import ModelInfo, apply_recipe
from srq.calib.sites import PlacementConfig
from srq.export.qdq_export import export_quantized
from srq.imaging.datasets import open_dataset
from srq.runtime.ort_engine import OrtEngine, OrtOptions, optimized_model_path
from srq.zoo.loader import load_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODELS = {  # name -> (checkpoint or built-in name, placement policy)
    "imdn-x2": (str(SHARED / "weights/IMDN/IMDN_x2.pth"), "body"),
    "swinir-light-x2": ("swinir-light-x2", "2dquant"),
}
TILE = 48
INJECT = {"imdn-x2": "/fea_conv/Conv_output_0"}  # FP first conv's output tensor in the exported graph


def _lr_tensors(spec: str) -> list[torch.Tensor]:
    """LR images of a set as (1, 3, h, w) float32 in [0, 1]."""
    return [torch.from_numpy(s.lr.astype(np.float32) / 255).permute(2, 0, 1)[None].contiguous()
            for s in open_dataset(spec, 2)]


def _tiles(images: list[torch.Tensor], corners: list[tuple[int, int]]) -> list[torch.Tensor]:
    return [im[:, :, y:y + TILE, x:x + TILE].contiguous() for im in images for (y, x) in corners
            if y + TILE <= im.shape[2] and x + TILE <= im.shape[3]]


def _stats(diffs: list[np.ndarray]) -> dict[str, float]:
    d = np.concatenate([x.ravel() for x in diffs]).astype(np.float64)
    mse = float(np.mean(d**2))
    return {"psnr_db": float("inf") if mse == 0 else 10 * np.log10(1 / mse),
            "frac_over_1_255": float(np.mean(np.abs(d) > 1 / 255)), "max_abs": float(np.abs(d).max())}


def _engine_tensor(optimized: Path, name: str, x: np.ndarray) -> np.ndarray:
    """Float tensor ``name`` of the optimized graph ORT ran, for input ``x`` (kernels as optimized)."""
    model = onnx.load(optimized)
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.add_session_config_entry("session.x64quantprecision", "1")
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run([name], {sess.get_inputs()[0].name: x})[0]


def measure(name: str, bits: int, sets: dict[str, list[torch.Tensor]], inject: bool, work: Path,
            include: tuple[str, ...] = (), exclude: tuple[str, ...] = (), bias_correction: bool = False,
            first_conv_bits: int | None = None, float_output: tuple[str, ...] = ()) -> dict:
    ckpt, policy = MODELS[name]
    model = load_model(ckpt)
    crops = [im[:, :, :32, :32] for im in _lr_tensors(str(SHARED / "benchmarks/Set5"))[:2]]
    cfg = CalibConfig(PlacementConfig(policy=policy, w_bits=bits, a_bits=bits, include=include, exclude=exclude,
                                      bias_correction=bias_correction, first_conv_bits=first_conv_bits,
                                      float_output=float_output),
                      data="Set5 LR 1-2, 32x32")
    t0 = time.perf_counter()
    recipe = calibrate(model.module, cfg, crops, ModelInfo.of(model))
    path = export_quantized(load_model(ckpt), recipe, "ort", (TILE, TILE), work / f"{name}_w{bits}.onnx")
    fake = load_model(ckpt)
    apply_recipe(fake.module, recipe)
    inject = inject and name in INJECT and not any(s.name.startswith("fea_conv.") for s in recipe.sites)
    engine = OrtEngine(path, OrtOptions(threads=1, save_optimized=inject))
    row = {"model": name, "bits": f"W{bits}A{bits}", "policy": policy, "include": list(include),
           "exclude": list(exclude),
           "bias_correction": bias_correction, "first_conv_bits": first_conv_bits,
           "float_output": list(float_output), "sites": len(recipe.sites), "sets": {}}
    for set_name, tiles in sets.items():
        diffs, injected = [], []
        for x in tiles:
            out = np.clip(engine.run(x.numpy()), 0, 1)
            with torch.no_grad():
                diffs.append(out - fake.module(x).clamp(0, 1).numpy())
            if inject:
                fea = torch.from_numpy(_engine_tensor(optimized_model_path(path), INJECT[name], x.numpy()))
                hook = fake.module.fea_conv.register_forward_hook(lambda _m, _a, _y: fea)
                with torch.no_grad():
                    injected.append(out - fake.module(x).clamp(0, 1).numpy())
                hook.remove()
        row["sets"][set_name] = {"tiles": len(tiles), **_stats(diffs)}
        if injected:
            row["sets"][set_name]["engine_first_conv_injected"] = _stats(injected)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    engine.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--bits", nargs="+", type=int, default=[8, 4])
    parser.add_argument("--inject", action="store_true", help="also run the fake-quant model on the engine's "
                        "FP first-conv output (IMDN)")
    parser.add_argument("--include", nargs="*", default=[], help="module globs quantized on top of the policy "
                        "(e.g. fea_conv: IMDN's FP first conv)")
    parser.add_argument("--exclude", nargs="*", default=[], help="module globs left FP despite the policy "
                        "(e.g. '*.cca.*': IMDN's channel attention on pooled statistics)")
    parser.add_argument("--bias-correction", action="store_true", help="calibrate with 2DQuant+'s beta "
                        "(phase-1 beta = the observed mean; every input site)")
    parser.add_argument("--first-conv-bits", type=int, default=None, help="quantize the first conv at these bits "
                        "(srq calibrate --first-conv-bits; IMDN's fea_conv)")
    parser.add_argument("--float-output", nargs="*", default=[], help="quantized convs that keep a float output "
                        "(srq calibrate --float-output; e.g. LR_conv, IMDN's body-end conv)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, help="JSON record")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    set5 = _lr_tensors(str(SHARED / "benchmarks/Set5"))[2:]
    sets = {"Set5 3-5": _tiles(set5, [(40, 40)]),
            "builtin:demo": _tiles(_lr_tensors("builtin:demo"), [(40, 40), (100, 140)])}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for bits in args.bits:
                rows.append(measure(name, bits, sets, args.inject, Path(tmp), tuple(args.include),
                                    tuple(args.exclude), args.bias_correction, args.first_conv_bits,
                                    tuple(args.float_output)))
                print(json.dumps(rows[-1]), flush=True)
    print("\n| Model | Bits | beta | first conv bits | Extra sites | Excluded | Set | Tiles | PSNR dB | > 1/255 | max abs | engine first conv injected |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        for set_name, s in r["sets"].items():
            inj = s.get("engine_first_conv_injected")
            inj_txt = f"{inj['psnr_db']:.1f}, {inj['frac_over_1_255']:.2%}" if inj else "-"
            print(f"| {r['model']} | {r['bits']} | {'yes' if r.get('bias_correction') else 'no'} | {r.get('first_conv_bits') or 'FP'} | {' '.join(r['include']) or '-'} | {' '.join(r.get('exclude', [])) or '-'} | {set_name} | {s['tiles']} | "
                  f"{s['psnr_db']:.1f} | "
                  f"{s['frac_over_1_255']:.3%} | {s['max_abs']:.2g} | {inj_txt} |")
    if args.out:
        args.out.write_text(json.dumps({"torch": torch.__version__, "onnxruntime": ort.__version__, "tile": TILE,
                                        "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
