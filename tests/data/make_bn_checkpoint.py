"""Writes tests/data/bn_checkpoint.safetensors with PyTorch itself.

Replays the first four steps of case `seq_3d_5x4x7_cfg0` of
pytorch_cases.json through a real torch.nn.BatchNorm1d(4) (weight and bias
from the case's init, then train / train / eval / train forwards on the
case's inputs), checks that the running statistics equal the recorded ones,
and writes `safetensors.torch.save_file` of `bn.state_dict()` under the
prefix "bn1.", plus:
  - "fc.weight": an unrelated tensor, so loading must pick its prefix;
  - "expected.input" / "expected.output": the case's fifth (eval) input and
    the output torch computes for it from this very state.
tests/interop.rs loads the file with prefix "bn1." and checks the eval
output against both torch's output in the file and the recorded case.
Needs torch, numpy and safetensors:
    python3 tests/data/make_bn_checkpoint.py
"""
import json
import os

import numpy as np
import torch
from safetensors.torch import save_file

here = os.path.dirname(os.path.abspath(__file__))
cases = json.load(open(os.path.join(here, "pytorch_cases.json")))["cases"]
case = next(c for c in cases if c["name"] == "seq_3d_5x4x7_cfg0")
cfg = case["config"]

torch.manual_seed(0)
bn = torch.nn.BatchNorm1d(
    cfg["num_features"], eps=cfg["eps"], momentum=cfg["momentum"],
    affine=cfg["affine"], track_running_stats=cfg["track_running_stats"],
)
with torch.no_grad():
    bn.weight.copy_(torch.tensor(case["init"]["weight"], dtype=torch.float32))
    bn.bias.copy_(torch.tensor(case["init"]["bias"], dtype=torch.float32))


def tensor(step, key):
    return torch.tensor(step[key], dtype=torch.float32).reshape(step["shape"])


for step in case["steps"][:4]:
    bn.train(step["mode"] == "train")
    with torch.no_grad():
        bn(tensor(step, "input"))
    np.testing.assert_allclose(bn.running_mean.numpy(), step["running_mean"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(bn.running_var.numpy(), step["running_var"], rtol=1e-6, atol=1e-6)
    assert int(bn.num_batches_tracked) == step["num_batches_tracked"]

last = case["steps"][4]
assert last["mode"] == "eval"
bn.eval()
x = tensor(last, "input")
with torch.no_grad():
    y = bn(x)

tensors = {"bn1." + k: v.detach().contiguous() for k, v in bn.state_dict().items()}
tensors["fc.weight"] = torch.ones(4, 3)
tensors["expected.input"] = x.contiguous()
tensors["expected.output"] = y.contiguous()
out = os.path.join(here, "bn_checkpoint.safetensors")
save_file(tensors, out, metadata={"format": "pt", "torch": torch.__version__})
print(f"wrote {out} with torch {torch.__version__}")
