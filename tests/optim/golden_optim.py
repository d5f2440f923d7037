#!/usr/bin/env python3
"""Golden values for tests/optim/optimizer_golden_test.cpp, recorded from PyTorch 1.13 (float32 parameters).

Run: /usr/bin/python3 tests/optim/golden_optim.py   (Debian: apt-get install python3-torch python3-numpy)
Prints C++ initializer lists; paste them into the test. The inputs here must stay equal to the test's.
"""
import math

import torch

W0 = [[0.5, -1.25, 2.0], [0.1, -0.3, 0.75]]  # a (2, 3) weight
GRADS = [  # the gradient given at each of 4 steps
    [[0.2, -0.1, 0.4], [-0.3, 0.05, 0.0]],
    [[0.1, 0.3, -0.2], [0.25, -0.15, 0.5]],
    [[-0.4, 0.2, 0.1], [0.05, 0.35, -0.1]],
    [[0.3, -0.25, 0.15], [-0.2, 0.1, 0.45]],
]


def cpp(name, rows):
    body = ",\n    ".join("{" + ", ".join("%.9g" % v for v in r) + "}" for r in rows)
    print("// %s\n{\n    %s}," % (name, body))


def run(make_opt, lars_eta=None, wd=0.0):
    """Weights (flattened) after each step. lars_eta: LARS (You et al. 2017) as NVIDIA apex's LARC with
    clip=False and eps=0: g <- eta |w| / (|g| + wd |w|) (g + wd w), then the wrapped SGD without decay."""
    w = torch.tensor(W0, dtype=torch.float32, requires_grad=True)
    opt = make_opt([w])
    out = []
    for g in GRADS:
        w.grad = torch.tensor(g, dtype=torch.float32)
        if lars_eta is not None:
            with torch.no_grad():
                wn, gn = torch.norm(w.data), torch.norm(w.grad)
                trust = lars_eta * wn / (gn + wd * wn)
                w.grad.add_(w.data, alpha=wd).mul_(trust)
        opt.step()
        out.append(w.detach().flatten().tolist())
    return out


print("// ---- optimizers: weights after steps 1..4")
cpp("adam lr 0.01 wd 0", run(lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.9, 0.999), eps=1e-8)))
cpp("adam lr 0.01 wd 0.1 (L2 in the gradient)",
    run(lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)))
cpp("adamw lr 0.01 wd 0.1", run(lambda p: torch.optim.AdamW(p, lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)))
cpp("adam lr 0.05 betas (0.8, 0.99) eps 1e-3",
    run(lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.8, 0.99), eps=1e-3)))
cpp("sgd lr 0.1 momentum 0.9 nesterov wd 0.01",
    run(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)))
cpp("lars eta 0.02 sgd lr 0.5 momentum 0.9 wd 0.01",
    run(lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9), lars_eta=0.02, wd=0.01))
cpp("lars eta 0.02 sgd lr 0.5 momentum 0.9 nesterov wd 0.01",
    run(lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9, nesterov=True), lars_eta=0.02, wd=0.01))


def lrs(make_sched, steps, total=100):
    """lr at each step in `steps` of a per-iteration schedule (stepped once per optimizer step)."""
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    s = make_sched(opt)
    out = {}
    for t in range(total):
        if t in steps:
            out[t] = opt.param_groups[0]["lr"]
        opt.step()
        s.step()
    return [out[t] for t in steps]


print("// ---- schedules: lr 0.1, 10 steps per epoch, 100 steps")
STEPS = [0, 1, 9, 10, 15, 29, 30, 31, 50, 59, 60, 99]
print("// steps", STEPS)
cpp("step: step_epochs 3, gamma 0.1 (StepLR step_size 30)",
    [lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=30, gamma=0.1), STEPS)])
cpp("cosine: min_lr 0.001 (CosineAnnealingLR T_max 100, eta_min 0.001)",
    [lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=100, eta_min=0.001), STEPS)])
cpp("constant with warm-up 1.5 epochs (LinearLR 0.1 -> 1 over 15 steps)",
    [lrs(lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=15), STEPS)])
cpp("cosine with warm-up 2 epochs (ChainedScheduler LinearLR 20 steps, CosineAnnealingLR T_max 100)",
    [lrs(lambda o: torch.optim.lr_scheduler.ChainedScheduler([
        torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=20),
        torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=100)]), STEPS)])
cpp("step with warm-up 2 epochs (ChainedScheduler LinearLR 20 steps, StepLR 30)",
    [lrs(lambda o: torch.optim.lr_scheduler.ChainedScheduler([
        torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=20),
        torch.optim.lr_scheduler.StepLR(o, step_size=30, gamma=0.1)]), STEPS)])

PLATEAU_LOSSES = [1.0, 0.9, 0.9, 0.95, 0.91, 0.85, 0.8499, 0.84995, 0.86, 0.87, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]
print("// plateau losses", PLATEAU_LOSSES)
w = torch.zeros(1, requires_grad=True)
opt = torch.optim.SGD([w], lr=0.1)
pl = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=2, threshold=1e-4,
                                                threshold_mode="rel")
after = []
for loss in PLATEAU_LOSSES:
    pl.step(loss)
    after.append(opt.param_groups[0]["lr"])
cpp("plateau: lr after each end_epoch (ReduceLROnPlateau factor 0.5 patience 2 threshold 1e-4 rel)", [after])
