"""Turn dlib's face-recognition ResNet into the ONNX file the station runs (run once).

dlib has no BLAS in the prebuilt wheel the station installs (dlib-bin), so its encoder costs
about 100 ms of CPU a face, most of a verification (ADR 0162). OpenCV's dnn module runs the
same network, with the same weights, in a fraction of that. This script is how
station/vision/models/dlib_face_encoder.onnx was made, so anyone can redo it:

    python3 -m venv /tmp/onnxvenv
    /tmp/onnxvenv/bin/pip install onnx numpy
    /tmp/onnxvenv/bin/python tools/export_dlib_encoder.py \\
        .venv/lib/python3.11/site-packages/face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat \\
        station/vision/models/dlib_face_encoder.onnx

The network is dlib's `anet_type` from examples/dnn_face_recognition_ex.cpp: a 7x7 stem, max
pooling, 14 residual units in five levels (32, 64, 128, 256, 256 filters) and a 128-wide fully
connected layer without bias. Two things of dlib's own must be kept exactly:
- a down-sampling unit adds an average-pooled copy of its input to the block's output, and
  dlib's add_prev adds tensors of different shapes as if the smaller were padded with zeros
  at the end (more channels; at the 8 -> 3 px step, a 3x3 map inside a 4x4 one);
- the input is (pixel - the file's channel mean) / 256, RGB.

The weights are read from dlib's own serialisation (dlib/serialize.h: integers are a control
byte of length and sign then little-endian bytes, scalars as mantissa and exponent, tensors as
raw little-endian float32). The file's layers appear bottom-up, input first. The output was
checked against dlib's compute_face_descriptor (tests/vision/test_face_encoder.py).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class _Stream:
    """dlib's serialisation primitives over bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def int(self) -> int:
        control = self.data[self.pos]
        size = control & 0x0F
        raw = self.data[self.pos + 1:self.pos + 1 + size]
        self.pos += 1 + size
        value = int.from_bytes(raw, "little")
        return -value if control & 0x80 else value

    def string(self) -> str:
        size = self.int()
        text = self.data[self.pos:self.pos + size].decode("ascii")
        self.pos += size
        return text

    def boolean(self) -> bool:
        ch = self.data[self.pos:self.pos + 1]
        self.pos += 1
        if ch not in (b"0", b"1"):
            raise ValueError(f"not a bool at {self.pos - 1}: {ch!r}")
        return ch == b"1"

    def scalar(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:
            raise ValueError("inf or nan where a weight was expected")
        return float(mantissa) * 2.0 ** exponent

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise ValueError("unexpected tensor version")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, "<f4", count, self.pos).reshape(shape)
        self.pos += 4 * count
        return values.astype(np.float32)

    def alias(self) -> tuple[int, ...]:
        if self.int() != 1:
            raise ValueError("unexpected alias_tensor version")
        return tuple(self.int() for _ in range(4))

    def expect(self, *names: str) -> str:
        name = self.string()
        if name not in names:
            raise ValueError(f"expected {'/'.join(names)} at {self.pos}, found {name!r}")
        return name


@dataclass
class _Weights:
    mean_rgb: tuple[float, float, float]
    convs: list[tuple[np.ndarray, np.ndarray, int]] = field(default_factory=list)  # OIHW, bias, stride
    affines: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (scale, shift)
    fc: np.ndarray | None = None  # (inputs, outputs)


def _tail(s: _Stream, *, on_input: bool) -> None:
    """add_layer's own fields after a layer's details: three flags and three tensors; the one
    over the input layer (version 3) also its sample expansion factor."""
    for _ in range(3):
        s.boolean()
    for _ in range(3):
        s.tensor()
    if on_input:
        s.int()


def read_weights(data: bytes) -> _Weights:
    s = _Stream(data)
    s.int()  # add_loss_layer version
    s.expect("loss_metric_2")
    s.scalar(), s.scalar()  # margin, distance threshold: training only
    while True:  # the nested add_layer / tag / skip versions, outermost first
        if data[s.pos + 2:s.pos + 2 + 21] == b"input_rgb_image_sized":
            break
        s.int()
    s.expect("input_rgb_image_sized")
    mean = (s.scalar(), s.scalar(), s.scalar())
    if (s.int(), s.int()) != (150, 150):
        raise ValueError("the encoder's input is not 150x150")
    w = _Weights(mean)
    first = True
    while s.pos < len(data):
        name = s.expect("con_4", "affine_", "relu_", "max_pool_2", "avg_pool_2", "add_prev_", "fc_2")
        if name == "con_4":
            params = s.tensor().ravel()
            filters, _nr, _nc = s.int(), s.int(), s.int()
            stride_y, stride_x = s.int(), s.int()
            s.int(), s.int()  # padding: dlib's default (half the kernel at stride 1, else 0)
            shape = s.alias()
            bias_shape = s.alias()
            for _ in range(4):
                s.scalar()
            if stride_x != stride_y:
                raise ValueError("unequal strides")
            count = int(np.prod(shape))
            biases = params[count:count + int(np.prod(bias_shape))].copy()
            w.convs.append((params[:count].reshape(shape).copy(), biases, stride_y))
            if filters != shape[0]:
                raise ValueError("filter count disagrees with the filters' shape")
        elif name == "affine_":
            params = s.tensor().ravel()
            gamma = s.alias()
            s.alias()
            s.int()  # mode (conv)
            k = int(np.prod(gamma))
            w.affines.append((params[:k].copy(), params[k:2 * k].copy()))
        elif name in ("max_pool_2", "avg_pool_2"):
            for _ in range(6):
                s.int()
        elif name == "fc_2":
            outputs, inputs = s.int(), s.int()
            params = s.tensor().ravel()
            s.alias(), s.alias()
            s.int()  # bias mode: none
            for _ in range(4):
                s.scalar()
            w.fc = params[:inputs * outputs].reshape(inputs, outputs).copy()
        _tail(s, on_input=first)
        first = False
        if name == "fc_2":
            break
    if s.pos != len(data):
        raise ValueError(f"{len(data) - s.pos} bytes left after the last layer")
    if len(w.convs) != 29 or len(w.affines) != 29 or w.fc is None:
        raise ValueError("not dlib's face-recognition ResNet")
    return w


def build_onnx(w: _Weights):  # type: ignore[no-untyped-def]
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list = []
    inits: list = []
    counter = iter(range(10_000))

    def name(prefix: str) -> str:
        return f"{prefix}{next(counter)}"

    def const(values: np.ndarray, prefix: str) -> str:
        n = name(prefix)
        inits.append(numpy_helper.from_array(values, n))
        return n

    convs = iter(w.convs)
    affines = iter(w.affines)

    def conv_affine(x: str) -> str:
        """dlib's con then affine, folded into one Conv with a bias."""
        filters, bias, stride = next(convs)
        scale, shift = next(affines)
        k = filters.shape[2]
        pad = k // 2 if stride == 1 else 0
        out = name("conv")
        nodes.append(helper.make_node(
            "Conv", [x, const(filters * scale[:, None, None, None], "W"), const(bias * scale + shift, "B")],
            [out], kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4))
        return out

    def op(kind: str, inputs: list[str], **attrs) -> str:  # type: ignore[no-untyped-def]
        out = name(kind.lower())
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def widen(x: str, channels_in: int, channels_out: int) -> str:
        """dlib's add_prev over unequal channel counts: the missing channels are zeros."""
        if channels_in == channels_out:
            return x
        eye = np.zeros((channels_out, channels_in, 1, 1), np.float32)
        eye[np.arange(channels_in), np.arange(channels_in)] = 1.0
        return op("Conv", [x, const(eye, "E")], kernel_shape=[1, 1])

    def unit(x: str, channels: int, down: bool, channels_in: int, pad_main: int) -> str:
        main = op("Relu", [conv_affine(x)])
        main = conv_affine(main)
        if down:
            shortcut = widen(op("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2]),
                             channels_in, channels)
        else:
            shortcut = x
        if pad_main:  # dlib adds a smaller map into the top-left corner of a larger one
            pads = const(np.array([0, 0, 0, 0, 0, 0, pad_main, pad_main], np.int64), "P")
            main = op("Pad", [main, pads], mode="constant")
        return op("Relu", [op("Add", [main, shortcut])])

    mean = np.array(w.mean_rgb, np.float32).reshape(1, 3, 1, 1)
    x = op("Mul", [op("Sub", ["rgb", const(mean, "M")]), const(np.array(1 / 256, np.float32), "S")])
    x = op("MaxPool", [op("Relu", [conv_affine(x)])], kernel_shape=[3, 3], strides=[2, 2])
    # spatial sizes 150 -> 72 -> 35; then 35, 17, 8, 4 (3 padded to 4), 2 (1 padded to 2)
    plan = [(32, False, 0)] * 3 + [(64, True, 0)] + [(64, False, 0)] * 3 \
        + [(128, True, 0)] + [(128, False, 0)] * 2 + [(256, True, 1)] + [(256, False, 0)] * 2 \
        + [(256, True, 1)]
    channels = 32
    for width, down, pad_main in plan:
        x = unit(x, width, down, channels, pad_main)
        channels = width
    x = op("Flatten", [op("GlobalAveragePool", [x])])
    out = "descriptor"
    nodes.append(helper.make_node("MatMul", [x, const(w.fc, "F")], [out]))
    if next(convs, None) is not None or next(affines, None) is not None:
        raise ValueError("layers left over: the plan does not match the file")
    graph = helper.make_graph(
        nodes, "dlib_face_recognition_resnet_model_v1",
        [helper.make_tensor_value_info("rgb", TensorProto.FLOAT, ["faces", 3, 150, 150])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["faces", 128])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="parcel-station tools/export_dlib_encoder.py")
    onnx.checker.check_model(model)
    return model


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    source, target = Path(argv[0]), Path(argv[1])
    weights = read_weights(source.read_bytes())
    model = build_onnx(weights)
    target.write_bytes(model.SerializeToString())
    print(f"{target}: {len(weights.convs)} convolutions, mean RGB "
          f"{', '.join(f'{v:.3f}' for v in weights.mean_rgb)}, {target.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
