"""One layer as it is deployed, in the two forms the backends consume: an eager module and ONNX bytes.

A latency table times thousands of (layer, c_in, c_out) points, so the ONNX form is written node
by node with ``onnx.helper`` instead of going through ``torch.onnx.export`` (~0.5 s per block
with the default exporter). The graph is what ORT or TensorRT would run after their own
optimisation: BatchNorm folded into the convolution's weights and bias, then Relu, which they
fuse. The folding is done from a real Conv+BN module, so the two forms compute the same function.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from hwprune.errors import ConfigError

ONNX_OPSET = 17
"""Old enough for TensorRT 10's parser and any ORT from 1.14, new enough for every op used here."""
ONNX_IR_VERSION = 8
INPUT_NAME = "input"
OUTPUT_NAME = "output"
_KINDS = ("conv", "linear")


@dataclass(frozen=True)
class BlockSpec:
    """A layer's shape at deployment; batch and input size are part of it because latency is."""

    kind: str
    c_in: int
    c_out: int
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    depthwise: bool = False
    in_hw: tuple[int, int] = (1, 1)
    batch: int = 1
    groups: int = 1  # a grouped (not depthwise) conv's groups: each filter reads c_in / groups channels

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(f"block kind must be one of {', '.join(_KINDS)}, got {self.kind!r}")
        for field in ("c_in", "c_out", "kernel", "stride", "batch"):
            if int(getattr(self, field)) < 1:
                raise ConfigError(f"block {field} must be >= 1, got {getattr(self, field)}")
        if self.padding < 0:
            raise ConfigError(f"block padding must be >= 0, got {self.padding}")
        object.__setattr__(self, "in_hw", (int(self.in_hw[0]), int(self.in_hw[1])))
        if self.kind == "linear" and (self.depthwise or self.kernel != 1 or self.stride != 1 or self.padding):
            raise ConfigError("a linear block has no kernel, stride, padding or depthwise option")
        if self.groups < 1 or (self.groups > 1 and (self.kind != "conv" or self.depthwise)):
            raise ConfigError(f"only a dense conv block can be grouped, got groups={self.groups}")
        if self.c_in % self.groups or self.c_out % self.groups:
            raise ConfigError(f"a {self.groups}-group conv needs c_in and c_out divisible by {self.groups}")
        if self.depthwise and self.c_in != self.c_out:
            raise ConfigError(f"a depthwise conv needs c_in == c_out, got {self.c_in} -> {self.c_out}")
        if self.kind == "conv" and min(self.out_hw) < 1:
            raise ConfigError(f"kernel {self.kernel} with padding {self.padding} does not fit input {self.in_hw}")

    def __str__(self) -> str:
        """Short label for warnings and logs, e.g. ``conv3x3/s1 dw 32->32 @16x16 b8``."""
        if self.kind == "linear":
            return f"linear {self.c_in}->{self.c_out} b{self.batch}"
        dw = " dw" if self.depthwise else (f" g{self.groups}" if self.groups > 1 else "")
        h, w = self.in_hw
        return (
            f"conv{self.kernel}x{self.kernel}/s{self.stride}p{self.padding}{dw} "
            f"{self.c_in}->{self.c_out} @{h}x{w} b{self.batch}"
        )

    @property
    def conv_groups(self) -> int:
        """The convolution's ``groups``: its width when depthwise."""
        return self.c_in if self.depthwise else self.groups

    @property
    def out_hw(self) -> tuple[int, int]:
        if self.kind == "linear":
            return (1, 1)
        h, w = self.in_hw
        k, s, p = self.kernel, self.stride, self.padding
        return ((h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"in_hw": list(self.in_hw)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlockSpec:
        try:
            return cls(**{**data, "in_hw": tuple(data.get("in_hw", (1, 1)))})
        except TypeError as exc:
            raise ConfigError(f"block spec is malformed: {exc}") from None


def input_shape(spec: BlockSpec) -> tuple[int, ...]:
    if spec.kind == "linear":
        return (spec.batch, spec.c_in)
    return (spec.batch, spec.c_in, *spec.in_hw)


def output_shape(spec: BlockSpec) -> tuple[int, ...]:
    if spec.kind == "linear":
        return (spec.batch, spec.c_out)
    return (spec.batch, spec.c_out, *spec.out_hw)


def torch_block(spec: BlockSpec, seed: int = 0) -> nn.Module:
    """Conv(bias=False)+BN+ReLU or Linear, eval mode, with seeded non-trivial weights and BN statistics.

    BN statistics are randomised (not the identity defaults) so that folding them is actually
    exercised when this module is the source of an ONNX block.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if spec.kind == "linear":
            linear = nn.Linear(spec.c_in, spec.c_out)
            linear.weight.copy_(torch.randn(linear.weight.shape, generator=gen) / math.sqrt(spec.c_in))
            linear.bias.copy_(torch.randn(spec.c_out, generator=gen) * 0.01)
            return linear.eval()
        conv = nn.Conv2d(
            spec.c_in, spec.c_out, spec.kernel, spec.stride, spec.padding, groups=spec.conv_groups, bias=False
        )
        fan_in = (spec.c_in // spec.conv_groups) * spec.kernel * spec.kernel
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
        bn = nn.BatchNorm2d(spec.c_out)
        bn.weight.copy_(torch.rand(spec.c_out, generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(spec.c_out, generator=gen) * 0.1)
        bn.running_mean.copy_(torch.randn(spec.c_out, generator=gen) * 0.1)
        bn.running_var.copy_(torch.rand(spec.c_out, generator=gen) + 0.5)
    return nn.Sequential(conv, bn, nn.ReLU()).eval()


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias of the single convolution equal to ``bn(conv(x))`` in eval mode."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight.detach() * scale.reshape(-1, 1, 1, 1)
    bias = bn.bias.detach() - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias.detach() * scale
    return weight, bias


def onnx_block(spec: BlockSpec, module: nn.Module | None = None, seed: int = 0) -> bytes:
    """Serialized ONNX model of ``spec`` with BN folded; weights come from ``module`` or ``torch_block``."""
    from onnx import TensorProto, helper, numpy_helper

    module = torch_block(spec, seed) if module is None else module
    if spec.kind == "linear":
        if not isinstance(module, nn.Linear):
            raise ConfigError("a linear block's module must be an nn.Linear")
        weight, bias = module.weight.detach(), module.bias.detach()
        nodes = [helper.make_node("Gemm", [INPUT_NAME, "W", "B"], [OUTPUT_NAME], transB=1)]
    else:
        if not (isinstance(module, nn.Sequential) and len(module) >= 2 and isinstance(module[1], nn.BatchNorm2d)):
            raise ConfigError("a conv block's module must be Sequential(Conv2d, BatchNorm2d, ReLU)")
        weight, bias = fold_conv_bn(module[0], module[1])
        p = spec.padding
        nodes = [
            helper.make_node(
                "Conv",
                [INPUT_NAME, "W", "B"],
                ["conv_out"],
                kernel_shape=[spec.kernel, spec.kernel],
                strides=[spec.stride, spec.stride],
                pads=[p, p, p, p],
                group=spec.conv_groups,
            ),
            helper.make_node("Relu", ["conv_out"], [OUTPUT_NAME]),
        ]
    initializers = [
        numpy_helper.from_array(weight.float().contiguous().numpy(), "W"),
        numpy_helper.from_array(bias.float().contiguous().numpy(), "B"),
    ]
    graph = helper.make_graph(
        nodes,
        f"hwprune_{spec.kind}_block",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, list(input_shape(spec)))],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, list(output_shape(spec)))],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        producer_name="hwprune",
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        ir_version=ONNX_IR_VERSION,
    )
    return model.SerializeToString()
