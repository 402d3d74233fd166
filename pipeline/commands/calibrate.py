"""Calibrate post-training quantization of an SR model and write a recipe (2DQuant / 2DQuant+).

Places fake quantizers (--policy: 2dquant = SwinIR attention + MLP, the default for SwinIR;
body = every LR-side conv but the first, the default otherwise; all = every Conv/Linear/MatMul
but the first and last layer), observes their FP inputs on random LR crops of --calib-data,
initialises every clipping range with --method (phase 1), then optionally refines the ranges
(and the bias-correction shifts) by distillation from the FP model for --dqc-iters steps
(phase 2, DQC; the best state on a held-out eighth of the crops is kept; Ctrl-C stops it and
keeps the best state so far). The recipe (JSON + .safetensors sidecar, written atomically) is
what `srq eval --recipe` and the export read.

Methods: minmax, percentile (99.99 %), dobi (2DQuant's bound search), sorted (2DQuant+ sorted
grading; default). --bias-correction adds 2DQuant+'s per-site shift beta.

examples:
  srq calibrate IMDN_x2.pth --bits w8a8 --out imdn_w8a8.json
  srq calibrate IMDN_x2.pth --bits w4a4 --bias-correction --dqc-iters 200 --out imdn_w4a4.json
  srq calibrate IMDN_x2.pth --bits w8a8 --exclude '*.cca.*' --out imdn_w8a8_nocca.json
  srq calibrate IMDN_x2.pth --bits w4a4 --layer-bits 'IMDB*.c5=w8a8' --layer-bits 'LR_conv=w8a8' --out mixed.json
  srq eval IMDN_x2.pth --data Set5 --recipe imdn_w4a4.json
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

METHODS = ("minmax", "percentile", "dobi", "sorted")
BETA_SITES = ("all", "layers")  # srq.calib.sites.BETA_SITES, named here so that parsing needs no torch
_BITS = re.compile(r"w([2-8])a([2-8])")


def parse_bits(text: str) -> tuple[int, int]:
    """``"w4a4"`` -> ``(4, 4)``: weight and activation bits, each 2..8."""
    m = _BITS.fullmatch(text.strip().lower())
    if m is None:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected wNaM with weight bits N and activation bits M between 2 and 8 (e.g. w4a4, w8a8)")
    return int(m.group(1)), int(m.group(2))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="checkpoint (.pth/.pt/.safetensors) or built-in name (see `srq models`)")
    p.add_argument("--out", type=Path, required=True, help="recipe file to write (.json; sidecar .safetensors beside it)")
    p.add_argument("--scale", type=int, default=None, help="upscaling factor (default: the model's own)")
    p.add_argument("--bits", type=parse_bits, default=(4, 4), metavar="wNaM",
                   help="weight / activation bits, 2..8 each (default w4a4)")
    p.add_argument("--method", choices=METHODS, default="sorted", help="phase-1 bound search (default sorted)")
    p.add_argument("--bias-correction", action="store_true", help="2DQuant+ shift beta on two-sided input sites")
    p.add_argument("--beta-sites", choices=BETA_SITES, default="all",
                   help="with --bias-correction: shift every two-sided input (all, 2DQuant+, default) or only the "
                        "Conv/Linear inputs (layers), whose shift the export folds into the int32 bias; on SwinIR's "
                        "Q, K, V the shift is explicit engine work (docs/speed.md)")
    p.add_argument("--policy", choices=("2dquant", "body", "all"), default=None,
                   help="where quantizers go (default: 2dquant for SwinIR, body otherwise)")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="also quantize layers whose module path matches (repeatable, e.g. 'upsampler.*')")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="keep layers whose module path matches in FP (repeatable; wins over --include), "
                        "e.g. '*.cca.*' for IMDN's global-pooled channel attention")
    p.add_argument("--symmetric", action="store_true", help="symmetric int8-container quantization (TensorRT)")
    p.add_argument("--symmetric-weights", action="store_true",
                   help="symmetric narrow-range weights only (zero point 0; activations stay asymmetric). "
                        "With --bits w7a8 the weights fit |q| <= 63, so ONNX Runtime runs its fast U8S8 "
                        "kernels exactly on x86 without VNNI (docs/speed.md)")
    p.add_argument("--symmetric-8bit-weights", action="store_true",
                   help="symmetric narrow-range weights on the layers whose weights are 8-bit (all of them "
                        "with --bits w8aM, the --layer-bits ones in a mixed recipe): int8 with zero point 0, "
                        "which ONNX Runtime runs with its fast U8S8 kernels, exactly on VNNI CPUs (srq run's default)")
    p.add_argument("--conv-output-bits", type=int, default=8, metavar="B",
                   help="bits of each quantized conv's output requantization (ORT QLinearConv; default 8, 0 = none)")
    p.add_argument("--first-conv-bits", type=int, default=0, metavar="B",
                   help="policies body/all: also quantize the first conv (input, symmetric weights) at B bits, "
                        "whatever --bits, with a float output: the engine runs it as ConvInteger and reproduces "
                        "calibration exactly (an FP first conv rounds differently in PyTorch and ORT, which "
                        "flips levels downstream); IMDN x2 Set5 W8A8 -0.005 dB. With --integer-residuals its output "
                        "is requantized instead (the skip path stays integer). Default 0: FP, 2DQuant's choice")
    p.add_argument("--float-output", action="append", default=[], metavar="GLOB",
                   help="quantized convs whose module path matches keep a float output (repeatable): no 8-bit "
                        "output requantization, symmetric weights where the weight levels would not fit int8, "
                        "run by the engine as ConvInteger, exactly as calibrated. For the conv that closes "
                        "the body before an FP upsampler, e.g. IMDN's 'LR_conv'")
    p.add_argument("--layer-bits", action="append", default=[], metavar="GLOB=wNaM",
                   help="other weight / input bits for the quantized layers whose module path matches "
                        "(repeatable, last match wins): mixed precision, e.g. 'LR_conv=w8a8' in a W4A4 model. "
                        "benchmarks/site_sensitivity.py finds the layers that cost the most")
    p.add_argument("--qkv", choices=("split", "fused"), default="split",
                   help="SwinIR's qkv Linear: split into Q, K, V with an input quantizer each (2DQuant, default) or "
                        "kept fused with one: same bounds at phase 1, and the engine runs one integer GEMM instead of "
                        "three and a Concat (faster, docs/speed.md)")
    p.add_argument("--integer-gates", action="store_true",
                   help="spatial sigmoid gates that read a requantized conv output (PAN's pixel attention, RFDN's "
                        "ESA) get their own 8-bit output site (<sigmoid>.output, searched and trained like any "
                        "activation): ONNX Runtime then runs them as QLinearSigmoid instead of a float table "
                        "lookup, and PAN's gate products as QLinearMul, both reproduced exactly here. Not with "
                        "--symmetric (docs/integer-graph.md)")
    p.add_argument("--gate-products", action=argparse.BooleanOptionalAction, default=True,
                   help="with --integer-gates: a gate product that an activation reads (PAN's HR pixel attention) "
                        "gets its own 8-bit site, so ONNX Runtime runs it as QLinearMul (PAN x4 W8A8 integer graph: "
                        "2.87x -> 2.99x for -0.085 dB on Set5; docs/speed.md section 00). Default on")
    p.add_argument("--shared-inputs", action="store_true",
                   help="one grid per tensor: layers that read the same tensor (PAN's conv1_a / conv1_b, PAConv's "
                        "k2 / k3) share one input quantizer, and a layer that reads a requantized output unchanged "
                        "(PAN's att.conv) reads it on that grid, so the engine quantizes each tensor once and ONNX "
                        "Runtime can fuse the op that made it (e.g. QLinearLeakyRelu); the recipe lists both site "
                        "names with equal values (docs/integer-graph.md)")
    p.add_argument("--integer-residuals", action="store_true",
                   help="an arch's residual sums (PAN's SCPA, IMDN's IMDB blocks) get their own 8-bit output site "
                        "(<residual>.output); ONNX Runtime then adds two 8-bit tensors in one QLinearAdd kernel, "
                        "reproduced exactly here, and the layers that read the sum at 8 bits read it on that grid "
                        "(without --bias-correction); the first conv (--first-conv-bits) gets a requantized output. "
                        "Not with --symmetric (docs/integer-graph.md)")
    p.add_argument("--integer-concats", action="store_true",
                   help="an arch's channel concatenations (IMDN's distilled features) get their own 8-bit output site "
                        "(<concat>.output; ONNX Runtime's QLinearConcat), so that IMDN's channel attention sums its "
                        "statistics from the 8-bit levels and, with --integer-gates, gates them as QLinearMul, all "
                        "reproduced exactly here. Not with --symmetric (docs/integer-graph.md)")
    p.add_argument("--integer-activations", action="store_true",
                   help="a LeakyReLU whose output quantized layers read (also through a Split: IMDN's distillation "
                        "steps) gets an output site on their input grid (<act>.output); ONNX Runtime then runs "
                        "QLinearLeakyRelu and splits uint8 tensors, and with --integer-concats IMDN's distilled parts "
                        "reach the Concat on grids, all reproduced exactly here. Not with --symmetric; inert with "
                        "--bias-correction, whose shifted inputs are not on that grid (docs/integer-graph.md)")
    p.add_argument("--calib-data", default="builtin:calib", metavar="DIR|builtin:calib",
                   help="images whose LR side is cropped for calibration (default builtin:calib)")
    p.add_argument("--crops", type=int, default=32, help="number of LR crops (default 32)")
    p.add_argument("--crop-size", type=int, default=64, help="LR crop side in pixels (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed for crops, sampling and DQC batches (default 0)")
    p.add_argument("--dqc-iters", type=int, default=0, help="phase-2 DQC iterations (default 0 = phase 1 only)")
    p.add_argument("--dqc-batch", type=int, default=8, help="DQC batch size (default 8)")
    p.add_argument("--dqc-patch", type=int, default=48, help="DQC LR patch side, <= --crop-size (default 48)")
    p.add_argument("--dqc-lr", type=float, default=1e-2, help="DQC Adam learning rate (default 1e-2)")
    p.add_argument("--feature-weight", type=float, default=5.0, help="DQC feature-loss weight lambda (default 5)")


def run(args: argparse.Namespace) -> int:
    import time
    from collections import Counter

    from srq.calib import CalibConfig, DQCConfig, ModelInfo, PlacementConfig, SearchConfig, calibrate, calibration_crops
    from srq.errors import SrqError
    from srq.zoo.loader import load_model

    start = time.perf_counter()
    if args.out.suffix != ".json":
        raise SrqError(f"{args.out}: the recipe must be a .json file")
    if args.crops < 2 or args.crop_size < 8:
        raise SrqError(f"--crops {args.crops} / --crop-size {args.crop_size}: need at least 2 crops of 8 pixels")
    model = load_model(args.model, args.scale)
    policy = args.policy or ("2dquant" if model.arch == "SwinIR" else "body")
    w_bits, a_bits = args.bits
    placement = PlacementConfig(policy=policy, w_bits=w_bits, a_bits=a_bits, symmetric=args.symmetric,
                                weight_symmetric=args.symmetric_weights,
                                weight_symmetric_8bit=args.symmetric_8bit_weights,
                                bias_correction=args.bias_correction, beta_sites=args.beta_sites,
                                include=tuple(args.include), exclude=tuple(args.exclude),
                                conv_output_bits=args.conv_output_bits or None,
                                first_conv_bits=args.first_conv_bits or None,
                                float_output=tuple(args.float_output), qkv=args.qkv,
                                layer_bits=tuple(args.layer_bits), integer_gates=args.integer_gates,
                                gate_products=args.gate_products, shared_inputs=args.shared_inputs,
                                integer_residuals=args.integer_residuals, integer_concats=args.integer_concats,
                                integer_activations=args.integer_activations)
    dqc = DQCConfig(iterations=args.dqc_iters, batch_size=args.dqc_batch, patch=min(args.dqc_patch, args.crop_size),
                    lr=args.dqc_lr, feature_weight=args.feature_weight)
    crops = calibration_crops(args.calib_data, model.scale, args.crops, args.crop_size, model.in_channels, args.seed)
    data = f"{args.calib_data}: {args.crops} LR crops {args.crop_size}x{args.crop_size}, seed {args.seed}"
    config = CalibConfig(placement=placement, search=SearchConfig(method=args.method), dqc=dqc, seed=args.seed,
                         data=data)
    recipe = calibrate(model.module, config, list(crops.split(8)), ModelInfo.of(model))
    recipe.save(args.out)
    kinds = [s.kind for s in recipe.sites]
    outputs = sum(s.name.endswith(".output") for s in recipe.sites)
    widths = Counter(s.bits for s in recipe.sites if s.kind == "weight")
    beta = (" + beta" + (" (layer inputs)" if args.beta_sites == "layers" else "")) if args.bias_correction else ""
    print(f"{model.arch} x{model.scale}: W{w_bits}A{a_bits} {args.method}{beta}, policy {policy}, {len(kinds)} sites "
          f"({kinds.count('weight')} weight, {kinds.count('activation') - outputs} input, {outputs} conv output)"
          + (f"; layers by weight bits: {', '.join(f'{n} at {b}' for b, n in sorted(widths.items()))}"
             if len(widths) > 1 else ""))
    if args.dqc_iters:
        r = recipe.calibration.settings["dqc_result"]
        print(f"DQC: {recipe.calibration.iterations}/{args.dqc_iters} iterations"
              f"{' (interrupted: best state so far kept)' if r['interrupted'] else ''}, "
              f"{r['step_time_s']:.3f} s/step, best validation PSNR vs FP {r['best_psnr_db']:.2f} dB "
              f"at iteration {r['best_iteration']} (phase 1: {r['val_psnr_db'][0][1]:.2f} dB)"
              + (f"; {r['skipped_steps']} steps skipped (NaN/inf gradient)" if r.get("skipped_steps") else ""))
    print(f"wrote {args.out} (+ {args.out.with_suffix('.safetensors').name}) in {time.perf_counter() - start:.1f} s")
    return 0
