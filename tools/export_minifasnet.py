"""Turn the vendored MiniFASNet state dicts into the ONNX files the station ships (run once).

The station never imports torch: at run time OpenCV's dnn module runs the ONNX files in
station/vision/models/. This script is how those files were made, so anyone can redo it:

    python3 -m venv /tmp/torchvenv
    /tmp/torchvenv/bin/pip install torch==2.13.0 onnx numpy
    /tmp/torchvenv/bin/python tools/export_minifasnet.py \\
        ../shared/vendor/silent-face-anti-spoofing station/vision/models

The network is our own description of the published architecture (Minivision's
Silent-Face-Anti-Spoofing, Apache-2.0; see station/vision/models/NOTICE): a stem, four stages
of inverted bottleneck units (1x1 expand, 3x3 depthwise, 1x1 linear projection; residual inside
a stage, stride 2 between stages), optional squeeze-excitation on the last unit of each
residual stage, a global depthwise convolution and a 3-way classifier. Channel widths are not
written here: every layer reads its shape from the state dict, so one builder serves both
checkpoints (the pruned widths differ between V1SE and V2). Module names follow the
checkpoint's keys, because that is what load_state_dict matches on.

The input is raw BGR pixels 0-255 (no scaling, no mean): the authors trained on that.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

MODELS = {  # checkpoint -> (ONNX name, crop scale around the face box)
    "2.7_80x80_MiniFASNetV2.pth": ("minifasnet_v2_2.7.onnx", 2.7),
    "4_0_0_80x80_MiniFASNetV1SE.pth": ("minifasnet_v1se_4.0.onnx", 4.0),
}


class _ConvBN(nn.Module):
    def __init__(self, weights: dict[str, torch.Tensor], prefix: str, in_ch: int,
                 stride: int = 1, act: bool = True) -> None:
        super().__init__()
        w = weights[f"{prefix}.conv.weight"]
        out_ch, per_group, k, _ = w.shape
        self.out_ch = out_ch
        self.conv = nn.Conv2d(in_ch, out_ch, k, stride=stride,
                              padding=1 if k == 3 else 0, groups=in_ch // per_group, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.prelu = nn.PReLU(out_ch) if act else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.prelu(x) if self.prelu is not None else x


class _Excite(nn.Module):
    """Squeeze-excitation: channel weights from the pooled map, applied to the map."""

    def __init__(self, weights: dict[str, torch.Tensor], prefix: str, ch: int) -> None:
        super().__init__()
        mid = weights[f"{prefix}.fc1.weight"].shape[0]
        self.fc1 = nn.Conv2d(ch, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.fc2 = nn.Conv2d(mid, ch, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x.mean(dim=(2, 3), keepdim=True)
        g = torch.sigmoid(self.bn2(self.fc2(torch.relu(self.bn1(self.fc1(g))))))
        return x * g


class _Bottleneck(nn.Module):
    """1x1 expand, 3x3 depthwise (stride here), 1x1 projection without activation."""

    def __init__(self, weights: dict[str, torch.Tensor], prefix: str, in_ch: int,
                 stride: int, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        self.conv = _ConvBN(weights, f"{prefix}.conv", in_ch)
        self.conv_dw = _ConvBN(weights, f"{prefix}.conv_dw", self.conv.out_ch, stride=stride)
        self.project = _ConvBN(weights, f"{prefix}.project", self.conv_dw.out_ch, act=False)
        self.out_ch = self.project.out_ch
        self.se_module = (_Excite(weights, f"{prefix}.se_module", self.out_ch)
                          if f"{prefix}.se_module.fc1.weight" in weights else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.conv_dw(self.conv(x)))
        if not self.residual:
            return y
        if self.se_module is not None:
            y = self.se_module(y)
        return x + y


class _Stage(nn.Module):
    """Residual bottlenecks at one resolution; the key layout is `<stage>.model.<i>`."""

    def __init__(self, weights: dict[str, torch.Tensor], prefix: str, in_ch: int) -> None:
        super().__init__()
        units = []
        ch = in_ch
        i = 0
        while f"{prefix}.model.{i}.conv.conv.weight" in weights:
            unit = _Bottleneck(weights, f"{prefix}.model.{i}", ch, 1, residual=True)
            units.append(unit)
            ch = unit.out_ch
            i += 1
        self.model = nn.Sequential(*units)
        self.out_ch = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class AntiSpoofNet(nn.Module):
    """80x80 BGR crop -> 3 logits (index 1: a real face)."""

    def __init__(self, weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.conv1 = _ConvBN(weights, "conv1", 3, stride=2)
        self.conv2_dw = _ConvBN(weights, "conv2_dw", self.conv1.out_ch)
        ch = self.conv2_dw.out_ch
        # down (stride 2) then residual stage, three times, then a last residual stage
        self.conv_23 = _Bottleneck(weights, "conv_23", ch, 2, residual=False)
        self.conv_3 = _Stage(weights, "conv_3", self.conv_23.out_ch)
        self.conv_34 = _Bottleneck(weights, "conv_34", self.conv_3.out_ch, 2, residual=False)
        self.conv_4 = _Stage(weights, "conv_4", self.conv_34.out_ch)
        self.conv_45 = _Bottleneck(weights, "conv_45", self.conv_4.out_ch, 2, residual=False)
        self.conv_5 = _Stage(weights, "conv_5", self.conv_45.out_ch)
        self.conv_6_sep = _ConvBN(weights, "conv_6_sep", self.conv_5.out_ch)
        # the global depthwise convolution covers the whole 5x5 map (80 / 16)
        self.conv_6_dw = _ConvBN(weights, "conv_6_dw", self.conv_6_sep.out_ch, act=False)
        self.conv_6_dw.conv.padding = (0, 0)
        emb_in = weights["linear.weight"].shape[1]
        emb = weights["linear.weight"].shape[0]
        self.linear = nn.Linear(emb_in, emb, bias=False)
        self.bn = nn.BatchNorm1d(emb)
        self.prob = nn.Linear(emb, weights["prob.weight"].shape[0], bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (self.conv1, self.conv2_dw, self.conv_23, self.conv_3, self.conv_34,
                      self.conv_4, self.conv_45, self.conv_5, self.conv_6_sep, self.conv_6_dw):
            x = layer(x)
        x = torch.flatten(x, 1)
        return self.prob(self.bn(self.linear(x)))


def load(path: Path) -> AntiSpoofNet:
    raw = torch.load(path, map_location="cpu", weights_only=True)
    weights = {k.removeprefix("module."): v for k, v in raw.items()}
    net = AntiSpoofNet(weights)
    missing, unexpected = net.load_state_dict(weights, strict=True)
    assert not missing and not unexpected, (missing, unexpected)
    return net.eval()


def main(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for checkpoint, (name, _scale) in MODELS.items():
        net = load(src / checkpoint)
        dummy = torch.zeros(1, 3, 80, 80)
        # the legacy exporter keeps a plain Conv/BN-folded graph that cv2.dnn reads
        torch.onnx.export(net, dummy, str(dst / name), input_names=["input"],
                          output_names=["logits"], opset_version=13, dynamo=False,
                          do_constant_folding=True)
        print(f"{checkpoint} -> {dst / name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
