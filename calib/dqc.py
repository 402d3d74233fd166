"""Phase 2: distillation quantization calibration (DQC, 2DQuant), training only bounds and beta.

Teacher = the FP model, student = the fake-quantized copy; both in eval mode. Per iteration a
batch of ``batch_size`` random ``patch x patch`` sub-crops (random 90-degree rotation and flips)
of the training crops goes through both; the loss (paper form) is::

    L = mean|O - O_q| + lam * sum_i mean((F_i / ||F_i|| - F_qi / ||F_qi||)^2)

with ``F_i`` the output of feature layer ``i``, normalised per sample over all its elements
(norms detached, as in the paper; the released code's mis-broadcast norm is not reproduced).
Only ``lb``, ``ub`` and ``beta`` of every quantizer get gradients; weights and biases are frozen.
Adam (lr 1e-2, betas 0.9 / 0.999) with a cosine schedule over ``iterations``.

Step size per quantizer (``relative_lr``, on by default; off = the paper's one absolute lr):
Adam moves every parameter by about ``lr`` per step whatever its scale, which suits SwinIR's
per-tensor ranges of a few units (the paper's setting) but crosses the bounds of small ranges
within a few steps (measured: IMDN's channel-attention convs, range ~0.05, crossed after ~10
steps at lr 1e-2 and the loss went NaN). With ``relative_lr`` each quantizer's lr is ``lr``
times its phase-1 range ``mean(ub - lb)``, i.e. ~1 % of its range per step. After every step
the bounds are kept apart by at least 1 % of their phase-1 width (``ub >= lb + 0.01 w0``).

Feature layers (``feature_layers``): the direct children of the model that hold a quantizer, a
``ModuleList`` / ``Sequential`` among them replaced by its own such children -- SwinIR: the 4
residual groups ``layers.0..3``; IMDN: ``IMDB1..6``, ``c.0`` and ``LR_conv``; PAN: the
``SCPA`` blocks of ``SCPA_trunk`` and ``trunk_conv``. A layer returning a tuple contributes its first tensor.
Layers whose output is a map larger than the input (the HR reconstruction stage that ``--policy all``
quantizes: PAN's ``upconv``, ``att``, ``HRconv``, ``conv_last``) are left out: 2DQuant compares body
features, and PAN's attention products, requantized before a LeakyReLU, carry an error the output
does not see, which stalled DQC (docs/speed.md section 00).

Validation: the last ``val_fraction`` of the crops (whole crops, never trained on) is scored
every ``val_every`` iterations and at the end as PSNR of the student's output against the
teacher's (both clamped to [0, 1], peak 1, MSE over the whole split); the best state (phase 1
included, iteration 0) is restored at the end. Teacher outputs of the validation split are
computed once; those of a training batch once per batch, under ``no_grad``.

A step whose gradient holds NaN or inf is skipped (counted in ``skipped_steps``), as AMP's
GradScaler does, so a non-differentiable point of the model (e.g. a square root at 0) can never
corrupt the bounds; IMDN's CCA computes its std with a gradient-safe square root for that reason.

Deterministic for a seed (a private ``torch.Generator`` draws every batch; no dropout). Ctrl-C
stops training, restores the best state so far and returns with ``interrupted=True``.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from srq.calib.quantizer import FakeQuantizer
from srq.errors import SrqError


@dataclass(frozen=True)
class DQCConfig:
    """Phase-2 settings; ``iterations = 0`` skips DQC. ``patch``: LR sub-crop side (pixels)."""

    iterations: int = 0
    batch_size: int = 8
    patch: int = 48
    lr: float = 1e-2
    feature_weight: float = 5.0  # lambda (paper: 5)
    val_fraction: float = 0.125
    val_every: int = 50
    relative_lr: bool = True
    bf16: bool = False  # CPU bf16 autocast of the convs / matmuls (not the engine's arithmetic)
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.iterations < 0 or self.batch_size < 1 or self.patch < 1 or self.val_every < 1:
            raise SrqError(f"DQC settings out of range: {self}")
        if not 0 < self.val_fraction < 1:
            raise SrqError(f"DQC val_fraction {self.val_fraction}: must be in (0, 1)")


@dataclass
class DQCResult:
    """What DQC did: losses per iteration, validation PSNR (dB) per check, best PSNR and its iteration."""

    iterations_done: int = 0
    loss_curve: list[float] = field(default_factory=list)
    val_psnr: list[tuple[int, float]] = field(default_factory=list)
    best_psnr: float = float("nan")
    best_iteration: int = 0
    interrupted: bool = False
    step_time_s: float = float("nan")  # mean wall time of one training step
    skipped_steps: int = 0  # steps whose gradient held NaN / inf (optimizer step skipped)


def feature_layers(student: nn.Module, example: Tensor | None = None) -> list[str]:
    """Module paths whose outputs the feature loss compares (rule in the module docstring); with an
    ``example`` input ``(1, C, h, w)``, those whose output is a map larger than ``h x w`` are left out."""
    def holds_quantizer(m: nn.Module) -> bool:
        return any(isinstance(q, FakeQuantizer) for q in m.modules())

    paths = []
    for name, child in student.named_children():
        if not holds_quantizer(child):
            continue
        if isinstance(child, (nn.ModuleList, nn.Sequential)):
            paths += [f"{name}.{n}" for n, c in child.named_children() if holds_quantizer(c)]
        else:
            paths.append(name)
    if example is None:
        return paths
    hooks = _Features(student, paths)
    try:
        with torch.no_grad():
            student(example)
        area = example.shape[-2] * example.shape[-1]
        larger = {p for p, out in hooks.out.items() if out.ndim == 4 and out.shape[-2] * out.shape[-1] > area}
        return [p for p in paths if p not in larger]
    finally:
        hooks.remove()


class _Features:
    """Forward hooks recording the outputs of ``paths`` of one model (first tensor of a tuple)."""

    def __init__(self, model: nn.Module, paths: list[str]) -> None:
        self.out: dict[str, Tensor] = {}
        self.handles = [model.get_submodule(p).register_forward_hook(self._hook(p)) for p in paths]

    def _hook(self, path: str):
        def hook(_m, _args, output):
            self.out[path] = output[0] if isinstance(output, (tuple, list)) else output
        return hook

    def take(self) -> dict[str, Tensor]:
        out, self.out = self.out, {}
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _normalised(f: Tensor) -> Tensor:
    flat = f.float().reshape(f.shape[0], -1)
    return flat / flat.norm(dim=1, keepdim=True).detach().clamp_min(1e-12)


def feature_loss(teacher: dict[str, Tensor], student: dict[str, Tensor]) -> Tensor:
    """``sum_i mean((F_i/||F_i|| - F_qi/||F_qi||)^2)``, per-sample norms over all elements, detached."""
    return sum(F.mse_loss(_normalised(student[p]), _normalised(teacher[p])) for p in teacher)


def _augment(crops: Tensor, batch: int, patch: int, gen: torch.Generator) -> Tensor:
    n, _, h, w = crops.shape
    idx = torch.randint(n, (batch,), generator=gen)
    tops = torch.randint(h - patch + 1, (batch,), generator=gen)
    lefts = torch.randint(w - patch + 1, (batch,), generator=gen)
    ops = torch.randint(8, (batch,), generator=gen)
    out = []
    for i, t, l, o in zip(idx.tolist(), tops.tolist(), lefts.tolist(), ops.tolist()):
        p = crops[i, :, t:t + patch, l:l + patch]
        p = torch.rot90(p, o % 4, (1, 2))
        out.append(p.flip(2) if o >= 4 else p)
    return torch.stack(out)


def _psnr(mse: float) -> float:
    return float("inf") if mse <= 0 else 10.0 * math.log10(1.0 / mse)


def distill(student: nn.Module, teacher: nn.Module, crops: Tensor, cfg: DQCConfig, seed: int = 0,
            features: list[str] | None = None) -> DQCResult:
    """Train the quantizer bounds (and beta) of ``student`` towards ``teacher`` in place; return the record.

    ``crops``: ``(N, C, h, w)`` float32 model inputs, ``h, w >= cfg.patch``; the last
    ``ceil(val_fraction * N)`` are the validation split (N >= 2). The student ends in its best state.
    """
    result = DQCResult()
    n_val = math.ceil(cfg.val_fraction * crops.shape[0])
    if crops.shape[0] - n_val < 1:
        raise SrqError(f"DQC needs at least 2 calibration crops (got {crops.shape[0]})")
    if min(crops.shape[-2:]) < cfg.patch:
        raise SrqError(f"DQC patch {cfg.patch} is larger than the {tuple(crops.shape[-2:])} calibration crops")
    train, val = crops[:-n_val], crops[-n_val:]
    quantizers = [m for m in student.modules() if isinstance(m, FakeQuantizer)]
    params = [p for q in quantizers for p in (q.lb, q.ub, q.beta) if p is not None]
    trainable = {id(p) for p in params}
    frozen = [p for p in student.parameters() if id(p) not in trainable]
    saved_flags = [p.requires_grad for p in frozen]
    for p in frozen:
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    paths = feature_layers(student, train[:1, :, :cfg.patch, :cfg.patch]) if features is None else features
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    student.eval(), teacher.eval()
    s_hooks, t_hooks = _Features(student, paths), _Features(teacher, paths)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if cfg.bf16 else nullcontext

    def run_val() -> float:
        sq, count = 0.0, 0
        with torch.no_grad(), autocast():
            for (chunk, ref) in zip(val.split(cfg.batch_size), val_ref):
                out = student(chunk.contiguous(memory_format=fmt)).float().clamp(0, 1)
                sq += float(((out - ref) ** 2).sum())
                count += out.numel()
        s_hooks.take()
        return _psnr(sq / count)

    try:
        with torch.no_grad():
            val_ref = [teacher(c.contiguous(memory_format=fmt)).float().clamp(0, 1) for c in val.split(cfg.batch_size)]
        t_hooks.take()
        best = {id(p): p.detach().clone() for p in params}
        result.best_psnr = run_val()
        result.val_psnr.append((0, result.best_psnr))
        if cfg.iterations == 0:
            return result
        gen = torch.Generator().manual_seed(seed)
        widths = [(q.ub - q.lb).detach().clamp_min(0) for q in quantizers]
        groups = [{"params": [p for p in (q.lb, q.ub, q.beta) if p is not None],
                   "lr": cfg.lr * (float(w.mean()) if cfg.relative_lr and float(w.mean()) > 0 else 1.0)}
                  for q, w in zip(quantizers, widths)]
        opt = torch.optim.Adam(groups, lr=cfg.lr, betas=(0.9, 0.999))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.iterations)
        patch = min(cfg.patch, train.shape[-2], train.shape[-1])
        step_time = 0.0
        bar = tqdm(range(1, cfg.iterations + 1), desc="DQC", unit="it", leave=False)
        try:
            for it in bar:
                t0 = time.perf_counter()
                x = _augment(train, cfg.batch_size, patch, gen).contiguous(memory_format=fmt)
                with torch.no_grad(), autocast():
                    target = teacher(x).float()
                t_feat = {k: v.float() for k, v in t_hooks.take().items()}
                with autocast():
                    out = student(x).float()
                s_feat = s_hooks.take()
                loss = F.l1_loss(out, target)
                if paths and cfg.feature_weight:
                    loss = loss + cfg.feature_weight * feature_loss(t_feat, s_feat)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None):
                    opt.step()
                else:  # as AMP's GradScaler: never let a NaN / inf gradient into the bounds
                    result.skipped_steps += 1
                sched.step()
                with torch.no_grad():
                    for q, w in zip(quantizers, widths):
                        q.ub.copy_(torch.maximum(q.ub, q.lb + 0.01 * w))
                step_time += time.perf_counter() - t0
                result.iterations_done = it
                result.loss_curve.append(loss.item())
                bar.set_postfix(loss=f"{result.loss_curve[-1]:.5f}", best=f"{result.best_psnr:.2f}dB")
                if it % cfg.val_every == 0 or it == cfg.iterations:
                    psnr = run_val()
                    result.val_psnr.append((it, psnr))
                    if psnr > result.best_psnr:
                        result.best_psnr, result.best_iteration = psnr, it
                        best = {id(p): p.detach().clone() for p in params}
        except KeyboardInterrupt:
            result.interrupted = True
        finally:
            bar.close()
        result.step_time_s = step_time / max(result.iterations_done, 1)
        with torch.no_grad():
            for p in params:
                p.copy_(best[id(p)])
        return result
    finally:
        s_hooks.remove(), t_hooks.remove()
        for p, flag in zip(frozen, saved_flags):
            p.requires_grad_(flag)
