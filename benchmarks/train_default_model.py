"""Train srq's default model, SwinIR-light x2, from scratch on ``builtin:calib``; export it to the zoo.

The network is spandrel's SwinIR in the light configuration of the SwinIR paper (embed 60,
depths 6x4, heads 6x4, window 8, MLP ratio 2, pixelshuffledirect, ~910K parameters).
Training: L1 loss on random aligned (LR, HR) crops, the LR of each whole training image
made once by MATLAB bicubic (``srq.imaging.resize.bicubic_lr``), flips/rot90, Adam with a
linear warmup then cosine decay, seeded data order. Validation: Y-PSNR (crop border =
scale) on ``builtin:demo`` and, with ``--val-set5``, on Set5 (never trained on).

Resumable: every ``--checkpoint-minutes`` the model, optimizer, scheduler, RNG states,
step and validation curve go atomically to ``<work-dir>/checkpoint.pt``; rerunning the
same command continues from there (a different config is refused). Deterministic on CPU
for a given seed and thread count.

  python benchmarks/train_default_model.py --work-dir runs/train_default --threads 1 \\
      --val-set5 ../shared/data/benchmarks/Set5
  python benchmarks/train_default_model.py --work-dir runs/train_default --export

``--init-from`` starts a new run (own work dir, optimizer and schedule) from another run's
weights: how the shipped model was trained in two stages (see its model card).

``--export`` writes the trained parameters (no attn_mask / relative_position_index
buffers), fp16, with the official SwinIR state-dict keys, to
``zoo/weights/swinir-light-x2.safetensors``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from spandrel.architectures.SwinIR.__arch.SwinIR import SwinIR
from tqdm import tqdm

from srq.errors import SrqError
from srq.imaging.builtin import open_builtin
from srq.imaging.datasets import Sample, open_dataset
from srq.imaging.io import to_uint8
from srq.imaging.metrics import psnr_y

REPO = Path(__file__).resolve().parents[1]
EXPORT_PATH = REPO / "zoo" / "weights" / "swinir-light-x2.safetensors"
SCALE = 2
FLAT_HR_STD = 2.0  # uint8 units: crops flatter than this (black sky, retina border) are redrawn
FLAT_RETRIES = 10


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the training trajectory (saved in, and checked against, the checkpoint)."""

    steps: int = 1500
    batch: int = 16
    lr_patch: int = 32  # LR crop side in pixels; the HR crop is SCALE times larger
    lr: float = 1e-3  # peak Adam learning rate, reached after warmup_steps
    warmup_steps: int = 100
    min_lr: float = 1e-6  # cosine floor at the last step
    seed: int = 0
    drop_path: float = 0.0
    init_from: str = ""  # warm start: a previous run's checkpoint.pt (weights only; fresh optimizer/schedule)


def build_swinir_light_x2(img_size: int = 64, drop_path: float = 0.0) -> SwinIR:
    """SwinIR-light x2 exactly as the SwinIR paper's lightweight model (RGB in/out, range [0, 1])."""
    return SwinIR(
        img_size=img_size,
        in_chans=3,
        embed_dim=60,
        depths=[6, 6, 6, 6],
        num_heads=[6, 6, 6, 6],
        window_size=8,
        mlp_ratio=2.0,
        upscale=SCALE,
        img_range=1.0,
        upsampler="pixelshuffledirect",
        resi_connection="1conv",
        drop_path_rate=drop_path,
    )


class PairSampler:
    """Random aligned crops of whole-image (LR, HR) uint8 pairs, with the 8 flips/rotations.

    Images are drawn uniformly (not by area), then a crop position uniformly; crops whose
    HR std is below FLAT_HR_STD are redrawn (up to FLAT_RETRIES times).
    """

    def __init__(self, samples: list[Sample], lr_patch: int, seed: int):
        self.samples = [s for s in samples if min(s.lr.shape[:2]) >= lr_patch]
        if not self.samples:
            raise SrqError(f"training set: no image has an LR side >= {lr_patch}")
        self.lr_patch = lr_patch
        self.rng = np.random.default_rng(seed)

    def _crop(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.lr_patch
        for _ in range(FLAT_RETRIES):
            s = self.samples[self.rng.integers(len(self.samples))]
            y = int(self.rng.integers(s.lr.shape[0] - p + 1))
            x = int(self.rng.integers(s.lr.shape[1] - p + 1))
            hr = s.hr[y * SCALE : (y + p) * SCALE, x * SCALE : (x + p) * SCALE]
            if hr.std() >= FLAT_HR_STD:
                break
        return s.lr[y : y + p, x : x + p], hr

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(lr (n, 3, p, p), hr (n, 3, 2p, 2p)) float32 in [0, 1]."""
        lrs, hrs = [], []
        for _ in range(n):
            lr, hr = self._crop()
            k = int(self.rng.integers(8))
            if k & 1:
                lr, hr = lr[:, ::-1], hr[:, ::-1]
            lr, hr = np.rot90(lr, k >> 1), np.rot90(hr, k >> 1)
            lrs.append(lr.transpose(2, 0, 1))
            hrs.append(hr.transpose(2, 0, 1))
        to_t = lambda a: torch.from_numpy(np.ascontiguousarray(np.stack(a))).float().div_(255.0)  # noqa: E731
        return to_t(lrs), to_t(hrs)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of cfg.lr after ``step`` optimizer steps: linear warmup, then cosine to min_lr."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    floor = cfg.min_lr / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


@torch.no_grad()
def evaluate(model: SwinIR, samples: list[Sample]) -> float:
    """Mean Y-PSNR (dB, crop border = SCALE) of ``model`` over ``samples``."""
    model.eval()
    scores = []
    for s in samples:
        lr = torch.from_numpy(s.lr.transpose(2, 0, 1).copy()).float().div_(255.0)[None]
        sr = model(lr)[0].clamp_(0, 1).permute(1, 2, 0).numpy()
        scores.append(psnr_y(to_uint8(sr), s.hr, crop_border=SCALE))
    model.train()
    return float(np.mean(scores))


class Trainer:
    """The training state: model, optimizer, scheduler, sampler, step, curve; saved/restored whole."""

    def __init__(self, cfg: TrainConfig, train: list[Sample]):
        self.cfg = cfg
        torch.manual_seed(cfg.seed)
        self.model = build_swinir_light_x2(cfg.lr_patch, cfg.drop_path)
        if cfg.init_from:  # attention masks depend on the crop size, so they are rebuilt, not loaded
            weights = {k: v for k, v in read_checkpoint(Path(cfg.init_from))["model"].items() if "attn_mask" not in k}
            missing, unexpected = self.model.load_state_dict(weights, strict=False)
            if unexpected or any("attn_mask" not in k for k in missing):
                raise SrqError(f"{cfg.init_from}: not a SwinIR-light x2 training checkpoint ({missing[:3]}, {unexpected[:3]})")
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg))
        self.sampler = PairSampler(train, cfg.lr_patch, cfg.seed)
        self.step = 0
        self.elapsed_s = 0.0
        self.losses: list[float] = []
        self.curve: list[dict] = []

    def train_step(self) -> float:
        lr, hr = self.sampler.batch(self.cfg.batch)
        loss = F.l1_loss(self.model(lr), hr)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.step += 1
        self.losses.append(loss.item())
        return self.losses[-1]

    def state(self) -> dict:
        return {
            "config": asdict(self.cfg),
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(self.sampler.rng.bit_generator.state),
            "step": self.step,
            "elapsed_s": self.elapsed_s,
            "losses": self.losses,
            "curve": json.dumps(self.curve),
        }

    def load(self, state: dict, path: Path) -> None:
        if state["config"] != asdict(self.cfg):
            raise SrqError(f"{path}: was made with {state['config']}, not {asdict(self.cfg)}; use another --work-dir")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.sampler.rng.bit_generator.state = json.loads(state["numpy_rng"])
        self.step = state["step"]
        self.elapsed_s = state["elapsed_s"]
        self.losses = list(state["losses"])
        self.curve = json.loads(state["curve"])


def checkpoint_path(work_dir: Path) -> Path:
    return work_dir / "checkpoint.pt"


def save_checkpoint(trainer: Trainer, work_dir: Path) -> None:
    """Atomically replace ``<work_dir>/checkpoint.pt``; also write the curve as curve.json."""
    work_dir.mkdir(parents=True, exist_ok=True)
    for name, write in (
        ("checkpoint.pt", lambda f: torch.save(trainer.state(), f)),
        ("curve.json", lambda f: f.write(json.dumps({"losses": trainer.losses, "val": trainer.curve}).encode())),
    ):
        fd, tmp = tempfile.mkstemp(dir=work_dir, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, work_dir / name)


def read_checkpoint(path: Path) -> dict:
    """The state dict saved by ``save_checkpoint`` (tensors only, loaded with weights_only)."""
    if not path.is_file():
        raise SrqError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt file
        raise SrqError(f"{path}: cannot read checkpoint ({e})") from e


def load_checkpoint(trainer: Trainer, work_dir: Path) -> bool:
    """Restore ``trainer`` from the work dir's checkpoint; False when there is none."""
    path = checkpoint_path(work_dir)
    if not path.is_file():
        return False
    trainer.load(read_checkpoint(path), path)
    return True


def train(cfg: TrainConfig, work_dir: Path, val_every: int, checkpoint_minutes: float, set5: Path | None,
          stop_after: int | None = None) -> Trainer:
    """Run (or continue) training to cfg.steps; validate every ``val_every`` steps and at the end.

    ``stop_after``: leave (checkpoint saved) once this many steps are done, e.g. to fit a time
    slot or to check determinism; the schedule still runs to cfg.steps on the next rerun.
    """
    last = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    train_set = list(open_builtin("calib", SCALE))
    val_sets = {"demo": list(open_builtin("demo", SCALE))}
    if set5 is not None:
        val_sets["set5"] = list(open_dataset(str(set5), SCALE))
    trainer = Trainer(cfg, train_set)
    if load_checkpoint(trainer, work_dir):
        print(f"resumed at step {trainer.step} from {checkpoint_path(work_dir)}", flush=True)
    last_save = time.monotonic()
    bar = tqdm(total=cfg.steps, initial=trainer.step, desc="train", mininterval=30, file=sys.stdout)
    while trainer.step < last:
        t0 = time.perf_counter()
        loss = trainer.train_step()
        trainer.elapsed_s += time.perf_counter() - t0
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{trainer.sched.get_last_lr()[0]:.2e}", refresh=False)
        if trainer.step % val_every == 0 or trainer.step == cfg.steps:
            point = {"step": trainer.step, "train_s": round(trainer.elapsed_s, 1)}
            point.update({f"{k}_psnr_y": round(evaluate(trainer.model, v), 4) for k, v in val_sets.items()})
            trainer.curve.append(point)
            print(f"val {json.dumps(point)}", flush=True)
        if time.monotonic() - last_save > checkpoint_minutes * 60 or trainer.step == last:
            save_checkpoint(trainer, work_dir)
            last_save = time.monotonic()
    bar.close()
    return trainer


def export(work_dir: Path, out: Path) -> None:
    """Write the checkpoint's parameters (no buffers) as fp16 safetensors with official SwinIR keys."""
    state = read_checkpoint(checkpoint_path(work_dir))
    cfg = TrainConfig(**state["config"])
    model = build_swinir_light_x2(cfg.lr_patch, cfg.drop_path)
    model.load_state_dict(state["model"])
    params = {k: v.detach().half().contiguous() for k, v in model.named_parameters()}
    meta = {
        "arch": "SwinIR-light",
        "scale": str(SCALE),
        "steps": str(state["step"]),
        "train_s": f"{state['elapsed_s']:.0f}",
        "config": json.dumps(asdict(cfg)),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    os.close(fd)
    save_file(params, tmp, metadata=meta)
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; the shipped file is for everyone
    os.replace(tmp, out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {len(params)} tensors, step {state['step']})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = TrainConfig()
    p.add_argument("--work-dir", type=Path, required=True, help="checkpoint.pt, curve.json (rerun to resume)")
    p.add_argument("--steps", type=int, default=defaults.steps)
    p.add_argument("--batch", type=int, default=defaults.batch)
    p.add_argument("--lr-patch", type=int, default=defaults.lr_patch, help="LR crop side (px)")
    p.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate")
    p.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps)
    p.add_argument("--min-lr", type=float, default=defaults.min_lr)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="warm start from another run's checkpoint.pt (weights only; new optimizer and schedule)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--val-every", type=int, default=100, help="validate every N steps")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    p.add_argument("--val-set5", type=Path, default=None, help="Set5 folder (e.g. ../shared/data/benchmarks/Set5)")
    p.add_argument("--stop-after", type=int, default=None, metavar="N",
                   help="stop (checkpoint saved) once N steps are done; rerun without it to continue")
    p.add_argument("--export", action="store_true", help=f"write {EXPORT_PATH.relative_to(REPO)} and exit")
    p.add_argument("--export-to", type=Path, default=EXPORT_PATH)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    try:
        if args.export:
            export(args.work_dir, args.export_to)
            return 0
        cfg = TrainConfig(
            steps=args.steps,
            batch=args.batch,
            lr_patch=args.lr_patch,
            lr=args.lr,
            warmup_steps=args.warmup_steps,
            min_lr=args.min_lr,
            seed=args.seed,
            init_from=str(args.init_from.resolve()) if args.init_from else "",
        )
        train(cfg, args.work_dir, args.val_every, args.checkpoint_minutes, args.val_set5, args.stop_after)
    except SrqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
