"""Writes tests/data/pytorch_fused_cases.json with PyTorch itself.

Each case runs a real torch.nn.BatchNorm{1,2,3}d followed by the fused
epilogue `torch.relu(bn(x) + r)` (or without the ReLU, or without the
residual) through several train/eval steps, and records per step the
output and the autograd gradients of x, r, weight and bias for a given
grad_output, plus the running statistics. Like pytorch_cases.json, values
are computed in float64 on float32-rounded inputs (the exact answer an f32
implementation approximates). tests/conformance.rs replays every case on the GPU
(both memory formats) and the CPU reference.

Needs torch and numpy:
    python3 tests/data/make_fused_cases.py
"""
import json
import os

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(1234)


def f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def values(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def case(name, module, shape, relu, residual, cfg, modes, offset=0.0):
    c = shape[1]
    cls = {"BatchNorm1d": torch.nn.BatchNorm1d, "BatchNorm2d": torch.nn.BatchNorm2d,
           "BatchNorm3d": torch.nn.BatchNorm3d}[module]
    bn = cls(c, eps=cfg["eps"], momentum=cfg["momentum"], affine=cfg["affine"],
             track_running_stats=cfg["track_running_stats"]).double()
    init = {}
    if cfg["affine"]:
        w = f32(rng.normal(1.0, 0.3, c))
        b = f32(rng.normal(0.0, 0.3, c))
        with torch.no_grad():
            bn.weight.copy_(torch.tensor(w))
            bn.bias.copy_(torch.tensor(b))
        init = {"weight": w.tolist(), "bias": b.tolist()}
    steps = []
    for mode in modes:
        bn.train(mode == "train")
        x = torch.tensor(f32(rng.normal(offset, 2.0, shape)), requires_grad=True)
        r = torch.tensor(f32(rng.normal(0.0, 1.0, shape)), requires_grad=True)
        dy = torch.tensor(f32(rng.normal(0.0, 1.0, shape)))
        y = bn(x)
        if residual:
            y = y + r
        if relu:
            y = torch.relu(y)
        y.backward(dy)
        step = {"mode": mode, "shape": list(shape), "input": values(x),
                "output": values(y), "grad_output": values(dy),
                "grad_input": values(x.grad)}
        if residual:
            step["residual"] = values(r)
            step["grad_residual"] = values(r.grad)
        if cfg["affine"]:
            step["grad_weight"] = values(bn.weight.grad)
            step["grad_bias"] = values(bn.bias.grad)
            bn.weight.grad = None
            bn.bias.grad = None
        if cfg["track_running_stats"]:
            step["running_mean"] = values(bn.running_mean)
            step["running_var"] = values(bn.running_var)
            step["num_batches_tracked"] = int(bn.num_batches_tracked)
        steps.append(step)
    return {"name": name, "module": module, "config": cfg,
            "epilogue": {"relu": relu, "residual": residual},
            "tol": 1e-4, "init": init, "steps": steps}


def cfg(affine=True, track=True, momentum=0.1, eps=1e-5):
    return {"num_features": None, "eps": eps, "momentum": momentum,
            "affine": affine, "track_running_stats": track}


def with_c(c, shape):
    c = dict(c)
    c["num_features"] = shape[1]
    return c


cases = []
modes = ["train", "train", "eval", "train", "eval"]
for (module, shape) in [("BatchNorm1d", (16, 5)), ("BatchNorm1d", (6, 3, 7)),
                        ("BatchNorm2d", (4, 3, 5, 5)), ("BatchNorm2d", (2, 8, 3, 4)),
                        ("BatchNorm3d", (2, 3, 2, 3, 4))]:
    dims = "x".join(map(str, shape))
    for relu, residual in [(True, True), (True, False), (False, True)]:
        tag = ("relu" if relu else "") + ("_add" if residual else "")
        cases.append(case(f"{module}_{dims}_{tag}", module, shape, relu, residual,
                          with_c(cfg(), shape), modes))
# Other configurations with the ResNet epilogue.
cases.append(case("BatchNorm2d_4x6x3x3_relu_add_no_affine", "BatchNorm2d", (4, 6, 3, 3),
                  True, True, with_c(cfg(affine=False), (4, 6, 3, 3)), modes))
cases.append(case("BatchNorm2d_4x6x3x3_relu_add_no_stats", "BatchNorm2d", (4, 6, 3, 3),
                  True, True, with_c(cfg(track=False), (4, 6, 3, 3)), modes))
cases.append(case("BatchNorm2d_8x4x2x2_relu_add_cumulative", "BatchNorm2d", (8, 4, 2, 2),
                  True, True, with_c(cfg(momentum=None), (8, 4, 2, 2)), modes))
cases.append(case("BatchNorm2d_16x3x4x4_relu_add_offset", "BatchNorm2d", (16, 3, 4, 4),
                  True, True, with_c(cfg(), (16, 3, 4, 4)), ["train", "eval"], offset=1e4))

out = {"generator": f"torch {torch.__version__} BatchNorm + fused add/ReLU, "
                    "float64 on float32-rounded inputs", "cases": cases}
with open(os.path.join(here, "pytorch_fused_cases.json"), "w") as f:
    json.dump(out, f)
print(f"wrote {len(cases)} cases")
