"""Writes tests/data/bn_checkpoint.safetensors from PyTorch-recorded state.

With torch installed it builds a real torch.nn.BatchNorm1d, loads the state
and writes `safetensors.torch.save_file(bn.state_dict())`; without torch it
writes the same tensors with safetensors.numpy (the committed file was made
this way: torch was not installable on the machine).

The state is that of case `seq_3d_5x4x7_cfg0` of pytorch_cases.json (recorded
from torch.nn.BatchNorm1d) after its fourth step: weight and bias from the
case's init, running_mean / running_var / num_batches_tracked as PyTorch
recorded them. Keys and dtypes are those of `BatchNorm1d.state_dict()`
(float32 vectors, int64 scalar), prefixed "bn1."; an unrelated "fc.weight"
tensor checks that loading picks its prefix. Needs numpy and safetensors:
    python3 tests/data/make_bn_checkpoint.py
"""
import json
import os

import numpy as np
from safetensors.numpy import save_file

here = os.path.dirname(os.path.abspath(__file__))
cases = json.load(open(os.path.join(here, "pytorch_cases.json")))["cases"]
case = next(c for c in cases if c["name"] == "seq_3d_5x4x7_cfg0")
step = case["steps"][3]
state = {
    "bn1.weight": np.array(case["init"]["weight"], dtype=np.float32),
    "bn1.bias": np.array(case["init"]["bias"], dtype=np.float32),
    "bn1.running_mean": np.array(step["running_mean"], dtype=np.float32),
    "bn1.running_var": np.array(step["running_var"], dtype=np.float32),
    "bn1.num_batches_tracked": np.array(step["num_batches_tracked"], dtype=np.int64),
    "fc.weight": np.ones((4, 3), dtype=np.float32),
}
out = os.path.join(here, "bn_checkpoint.safetensors")
try:
    import torch
    from safetensors.torch import save_file as save_torch

    bn = torch.nn.BatchNorm1d(4)
    sd = {k[len("bn1."):]: torch.from_numpy(v) for k, v in state.items() if k.startswith("bn1.")}
    bn.load_state_dict(sd)
    tensors = {"bn1." + k: v.detach().contiguous() for k, v in bn.state_dict().items()}
    tensors["fc.weight"] = torch.ones(4, 3)
    save_torch(tensors, out, metadata={"format": "pt"})
except ImportError:
    save_file(state, out, metadata={"format": "pt"})
