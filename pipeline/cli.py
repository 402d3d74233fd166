"""`srq` entry point: argument parsing only; each sub-command lazily imports its stage.

Exit codes: 0 success, 1 a release gate or lint rule failed, 2 bad input (message names
the file and the cause), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from srq import __version__
from srq.errors import GateFailure, SrqError

# name -> (module under srq.pipeline.commands, one-line help). Modules are imported only
# when their command runs, so `srq upscale` never imports torch.
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("models", "list supported SR architectures: scales, colour mode, size multiple, source"),
    "export": ("export", "write a calibrated model as QDQ ONNX for ONNX Runtime (ort) or TensorRT (trt)"),
    "lint": ("lint", "check a QDQ ONNX model against ONNX Runtime / TensorRT Q/DQ rules"),
    "calibrate": ("calibrate", "quantize a model post-training (2DQuant / 2DQuant+) and write a recipe"),
    "eval": ("evaluate", "PSNR/SSIM (Y channel, SR-paper convention) of a model on a benchmark"),
    "run": ("run", "the whole job: calibrate -> export -> check for each bit setting, one verdict"),
    "check": ("check", "release check of an engine vs FP: quality, parity, latency, size; gates exit 1"),
    "upscale": ("upscale", "upscale images or folders with an ONNX / TensorRT engine (tiled)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srq",
        description=(
            "Quantize a super-resolution network to W8A8..W2A2, export it as QDQ ONNX, "
            "build an ONNX Runtime or TensorRT engine and gate its release on image quality."
        ),
        epilog="Run `srq COMMAND --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"srq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"srq.pipeline.commands.{module}")
        p = sub.add_parser(name, help=help_text, description=mod.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        # a job started in the background by a non-interactive shell inherits SIGINT as ignored;
        # restore Python's handler so `kill -INT` stops DQC with its best state, as Ctrl-C does
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return int(args._run(args) or 0)
    except SrqError as exc:
        print(f"srq {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except GateFailure as exc:
        for line in exc.lines:
            print(f"srq {args.command}: FAILED: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"srq {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
