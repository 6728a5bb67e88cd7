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

# The same state after `.half()`, `.bfloat16()` and `.double()`: every
# float entry in that dtype (num_batches_tracked stays int64), with torch's
# eval output of the converted module for the same input.
for name, dtype in [("f16", torch.float16), ("bf16", torch.bfloat16), ("f64", torch.float64)]:
    conv = torch.nn.BatchNorm1d(cfg["num_features"], eps=cfg["eps"], momentum=cfg["momentum"])
    conv.load_state_dict(bn.state_dict())
    conv = conv.to(dtype).eval()
    with torch.no_grad():
        yd = conv(x.to(dtype))
    tensors = {"bn1." + k: v.detach().contiguous() for k, v in conv.state_dict().items()}
    tensors["expected.input"] = x.to(dtype).contiguous()
    tensors["expected.output"] = yd.contiguous()
    out = os.path.join(here, f"bn_checkpoint_{name}.safetensors")
    save_file(tensors, out, metadata={"format": "pt", "torch": torch.__version__})
    print(f"wrote {out}")


# A small model with batch norms of every rank between other layers, trained
# a few steps so the running statistics are not the defaults; its state dict
# is what `safetensors.torch.save_file(model.state_dict())` writes. The
# file also holds, per batch-norm layer, an input and torch's eval output.
class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 4, 3, padding=1),
            torch.nn.BatchNorm2d(4),
            torch.nn.ReLU(),
        )
        self.volume = torch.nn.Sequential(torch.nn.Conv3d(2, 3, 1), torch.nn.BatchNorm3d(3))
        self.head = torch.nn.Linear(4, 5)
        self.bn_head = torch.nn.BatchNorm1d(5, eps=1e-3)
        self.plain = torch.nn.BatchNorm1d(2, affine=False)


torch.manual_seed(1)
model = Model()
for _ in range(3):
    f = model.features(torch.randn(2, 3, 5, 5))
    model.volume(torch.randn(2, 2, 2, 3, 3))
    model.bn_head(model.head(f.mean(dim=(2, 3))))
    model.plain(torch.randn(6, 2))
model.eval()
inputs = {
    "features.1.": torch.randn(2, 4, 3, 3),
    "volume.1.": torch.randn(2, 3, 2, 2, 2),
    "bn_head.": torch.randn(6, 5),
    "plain.": torch.randn(6, 2, 3),
}
layers = {"features.1.": model.features[1], "volume.1.": model.volume[1],
          "bn_head.": model.bn_head, "plain.": model.plain}
tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
with torch.no_grad():
    for prefix, xin in inputs.items():
        tensors["expected." + prefix + "input"] = xin.contiguous()
        tensors["expected." + prefix + "output"] = layers[prefix](xin).contiguous()
out = os.path.join(here, "model_checkpoint.safetensors")
save_file(tensors, out, metadata={"format": "pt", "torch": torch.__version__})
print(f"wrote {out} ({sorted(model.state_dict().keys())})")
