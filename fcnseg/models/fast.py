"""Fast paths for the FCN models: each exact, each switchable, each measured.

:func:`optimize_for_inference` returns an inference twin of an :class:`FCN`:
same head code, same crops, same outputs (to fp32 summation-order noise, see
below), computed faster on the CPU. Every option is measured by
``benchmarks/speed.py`` and is on by default only where it wins there:

``channels_last``
    The VGG16 3x3 convolutions run on channels-last (NHWC) tensors with
    channels-last weight copies, which oneDNN runs 1.5-3x faster than NCHW.
``matmul_classifier``
    ``fc6`` (7x7 on the tiny pool5 map) and ``fc7`` (1x1) run as plain matrix
    products (``unfold`` + one GEMM) on the weights as they are stored (no copy).
    oneDNN's channels-last 7x7 convolution re-lays-out the 411 MB ``fc6``
    weight on every call and ran at a third of the matmul rate.
``trim_padding``
    ``conv1_1``'s 100-pixel zero margin makes a band of identical rows (and
    columns) between the image and the canvas edge in every blob up to pool3.
    Those rows are pure repetition: the twin pads less, computes conv1-conv3
    on the narrower canvas, and re-inserts copies of a band row after pool3.
    The amount is found per input size by a symbolic run of the layer
    geometry (:func:`padding_plan`) that proves the re-expanded blob equals
    the faithful one row for row; where no trim is proven, none is made.
``depthwise_upsampling``
    A frozen bilinear deconvolution has its kernel only on the channel
    diagonal, so the C x C transposed convolution equals a depthwise one
    (``groups=C``); used only for layers whose weight is checked diagonal.
``bfloat16`` (off: changes numerics)
    bf16 autocast; about 2x on CPUs with AVX512-BF16/AMX; logits differ by
    bf16 rounding (tested within 5% of the logit range on a small model).

Summation order differs from the faithful model (other kernels), so logits
agree to fp32 reassociation noise: relative error around 1e-6, asserted in
``tests/test_fast_paths.py`` as ``max|fast - faithful| <= 1e-4 * max|faithful|``.

:func:`enable_fast_training` puts ``trim_padding`` and ``matmul_classifier`` into the
model itself, for training: the same function of the weights, hence the same gradients.

The twin shares the head's modules and the fc weights with the model but keeps
channels-last copies of the conv weights: build it after the weights are final
(e.g. once per evaluation), use it under ``torch.inference_mode()``, and keep
training and checkpointing the original model.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .fcn import FCN
from .upsampling import BilinearUpsampling
from .vgg import VGG16Backbone

#: Max-pooling of every VGG16 stage, as in :meth:`VGG16Backbone.forward` (Caffe ceil mode).
POOL_KERNEL, POOL_STRIDE = 2, 2
#: The stage whose output re-expands the trimmed band (stride 8, the first skip).
TRIM_LAST_STAGE = 3
#: Unfolded fc6 input is processed in row slabs of at most this many bytes (bounds memory on huge images).
UNFOLD_BUDGET_BYTES = 256 * 2**20


# --------------------------------------------------------------------------- padding trim
@dataclass(frozen=True)
class AxisPlan:
    """How one axis is trimmed: the padding used, and where band rows are re-inserted after pool3.

    ``inserts`` is applied in order to the stage-3 output along this axis:
    each ``(position, count, source)`` inserts ``count`` copies of row ``source`` before ``position``.
    """

    pad_start: int
    pad_end: int
    inserts: tuple[tuple[int, int, int], ...]


class _Interner:
    """Gives equal windows equal small integers: two rows with one id hold equal values."""

    def __init__(self) -> None:
        self.ids: dict[tuple, int] = {}

    def __call__(self, key: tuple) -> int:
        return self.ids.setdefault(key, len(self.ids) + 1)


_PAD = -1  # a position outside the blob, read as the layer's zero padding


def _simulate_axis(length: int, pad_start: int, pad_end: int, layers: Sequence[tuple], intern: _Interner) -> list[int]:
    """Row identities along one axis, from the image through ``layers``.

    The image rows are all distinct; the explicit zero padding of the input is
    one shared identity 0. A convolution row's identity is that of its window
    of input rows (``_PAD`` outside the blob: zero padding, which is not the
    band value after the first layer); a pooling row's likewise. Rows with one
    identity hold equal values in every channel and column (the network is the
    same function of identical windows), which is what the trim relies on.
    """
    rows = [0] * pad_start + [-(i + 2) for i in range(length)] + [0] * pad_end
    for index, (kind, kernel, stride, padding) in enumerate(layers):
        size = len(rows)
        if kind == "conv":
            out = (size + 2 * padding - kernel) // stride + 1
        else:  # Caffe/PyTorch ceil-mode pooling, no padding
            out = -(-(size - kernel) // stride) + 1
            if (out - 1) * stride >= size:
                out -= 1
        new = []
        for j in range(max(out, 0)):
            start = j * stride - padding
            window = tuple(rows[k] if 0 <= k < size else _PAD for k in range(start, start + kernel))
            if kind == "pool":
                window = tuple(w for w in window if w != _PAD)  # ceil mode: partial windows at the end
            new.append(intern((index, window)))
        rows = new
    return rows


def _insert(rows: list, position: int, count: int, source: int) -> list:
    return rows[:position] + [rows[source]] * count + rows[position:]


def _expansion(trimmed: list[int], faithful: list[int], n_start: int, n_end: int) -> tuple | None:
    """Inserts that turn the trimmed rows into the faithful ones, or None when there are none."""
    inserts = []
    rows = trimmed
    if n_start:
        first = next((i for i, (a, b) in enumerate(zip(rows, faithful)) if a != b), None)
        if first is None or first == 0:
            return None
        inserts.append((first, n_start, first - 1))  # the band row just before the first difference
        rows = _insert(rows, *inserts[-1])
    if n_end:
        last = next((i for i, (a, b) in enumerate(zip(rows[::-1], faithful[::-1])) if a != b), None)
        if last is None or last == 0:
            return None
        position = len(rows) - last
        inserts.append((position, n_end, position))
        rows = _insert(rows, *inserts[-1])
    return tuple(inserts) if rows == faithful else None


@functools.lru_cache(maxsize=256)
def _axis_plan(length: int, padding: int, layers: tuple, step: int) -> AxisPlan:
    intern = _Interner()
    faithful = _simulate_axis(length, padding, padding, layers, intern)

    def plan(trim_start: int, trim_end: int) -> AxisPlan | None:
        trimmed = _simulate_axis(length, padding - trim_start, padding - trim_end, layers, intern)
        inserts = _expansion(trimmed, faithful, trim_start // step, trim_end // step)
        return None if inserts is None else AxisPlan(padding - trim_start, padding - trim_end, inserts)

    candidates = range(padding - padding % step, 0, -step)
    best_start = next((t for t in candidates if plan(t, 0) is not None), 0)
    best_end = next((t for t in candidates if plan(0, t) is not None), 0)
    # Each side was proven alone; prove the pair, giving up on one side if needed.
    for trim_start, trim_end in ((best_start, best_end), (best_start, 0), (0, best_end)):
        found = plan(trim_start, trim_end)
        if found is not None:
            return found
    return AxisPlan(padding, padding, ())


def trim_geometry(backbone: VGG16Backbone) -> tuple[int, tuple[tuple, ...]] | None:
    """``conv1_1``'s padding and the geometry of the layers after it up to stage 3's pool.

    None when the trim does not apply (non-square kernels or paddings).
    """
    layers = []
    for stage, names in enumerate(backbone.conv_names[:TRIM_LAST_STAGE], start=1):
        for name in names:
            conv = getattr(backbone, name)
            square = {conv.kernel_size[0], conv.kernel_size[1]}, {conv.padding[0], conv.padding[1]}, set(conv.stride)
            if any(len(values) != 1 for values in square):
                return None
            padding = 0 if name == "conv1_1" else conv.padding[0]  # conv1_1's margin is padded explicitly
            layers.append(("conv", conv.kernel_size[0], conv.stride[0], padding))
        layers.append(("pool", POOL_KERNEL, POOL_STRIDE, 0))
    return backbone.conv1_1.padding[0], tuple(layers)


def padding_plan(backbone: VGG16Backbone, height: int, width: int) -> tuple[AxisPlan, AxisPlan] | None:
    """The proven padding trim for an input of ``height`` x ``width`` (rows plan, columns plan).

    Trims are multiples of the stride at stage 3 (8), so pooling windows stay
    aligned; each plan is accepted only when the symbolic run shows that the
    re-expanded stage-3 rows are exactly the faithful ones. Cached per size.
    None when the backbone's geometry is not one the trim handles.
    """
    geometry = trim_geometry(backbone)
    return None if geometry is None else _padding_plan(geometry, height, width)


@torch.compiler.disable  # plain Python bookkeeping: torch.compile must not trace it
def _padding_plan(geometry: tuple[int, tuple], height: int, width: int) -> tuple[AxisPlan, AxisPlan]:
    padding, layers = geometry
    step = POOL_STRIDE**TRIM_LAST_STAGE
    return _axis_plan(height, padding, layers, step), _axis_plan(width, padding, layers, step)


def _apply_inserts(x: torch.Tensor, inserts: tuple, dim: int) -> torch.Tensor:
    for position, count, source in inserts:
        shape = list(x.shape)
        shape[dim] = count
        copies = x.narrow(dim, source, 1).expand(shape)
        x = torch.cat([x.narrow(dim, 0, position), copies, x.narrow(dim, position, x.shape[dim] - position)], dim)
    return x


# --------------------------------------------------------------------------- matmul classifier
def _weight_matrix(weight: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``weight`` (O, C, kh, kw) as an (O, K) matrix without copying it, and whether K is ordered (kh, kw, C).

    A channels-last weight (as the training engine keeps it) is viewed in its own (kh, kw, C)
    order: reshaping it to (C, kh, kw) order would copy the 411 MB fc6 weight on every call.
    """
    out_channels = weight.shape[0]
    if weight.shape[-2:] != (1, 1) and not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last):
        return weight.permute(0, 2, 3, 1).reshape(out_channels, -1), True
    return weight.reshape(out_channels, -1), False


def _columns(x: torch.Tensor, kh: int, kw: int, spatial_first: bool) -> torch.Tensor:
    """``unfold`` of an NCHW blob, (N, C*kh*kw, L), its rows in the weight matrix's order."""
    batch, channels = x.shape[:2]
    if kh == kw == 1:
        return x.reshape(batch, channels, -1)
    cols = F.unfold(x, (kh, kw))
    if spatial_first:  # (C, kh*kw) -> (kh*kw, C), the order of a channels-last weight
        cols = cols.view(batch, channels, kh * kw, -1).transpose(1, 2).reshape(batch, channels * kh * kw, -1)
    return cols


def conv_as_matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Unpadded, stride-1 convolution as ``weight (O, C*k*k) @ unfold(x)``; NCHW output.

    One batched product when the unfolded input fits ``UNFOLD_BUDGET_BYTES`` (differentiable,
    so training uses it too); otherwise, for huge inputs, image by image in row slabs.
    """
    batch, channels, height, width = x.shape
    out_channels, _, kh, kw = weight.shape
    out_h, out_w = height - kh + 1, width - kw + 1
    if out_h < 1 or out_w < 1:
        raise RuntimeError(f"input {height}x{width} is smaller than the {kh}x{kw} kernel")
    matrix, spatial_first = _weight_matrix(weight)
    matrix = matrix.to(x.dtype)
    x = x.contiguous()
    bias_column = None if bias is None else bias.to(x.dtype)[:, None]
    row_bytes = channels * kh * kw * out_w * x.element_size()
    if batch * out_h * row_bytes <= UNFOLD_BUDGET_BYTES:
        # One GEMM (O, K) @ (K, N*L): the batch joins the columns, so the weight gradient is one GEMM too.
        cols = _columns(x, kh, kw, spatial_first)
        cols = cols[0] if batch == 1 else cols.transpose(0, 1).reshape(cols.shape[1], -1)
        out = matrix @ cols if bias_column is None else torch.addmm(bias_column, matrix, cols)
        out = out.view(out_channels, batch, out_h * out_w).transpose(0, 1)
        return out.reshape(batch, out_channels, out_h, out_w)
    out = x.new_empty(batch, out_channels, out_h, out_w)
    slab = max(1, UNFOLD_BUDGET_BYTES // row_bytes)
    for n in range(batch):
        for top in range(0, out_h, slab):
            rows = min(slab, out_h - top)
            cols = _columns(x[n : n + 1, :, top : top + rows + kh - 1], kh, kw, spatial_first)[0]
            result = matrix @ cols if bias_column is None else torch.addmm(bias_column, matrix, cols)
            out[n, :, top : top + rows] = result.view(out_channels, rows, out_w)
    return out


# --------------------------------------------------------------------------- the features
#: ``layer(name) -> (weight, bias, padding)`` for conv1_1 ... conv5_3, fc6, fc7.
LayerLookup = Callable[[str], tuple[torch.Tensor, torch.Tensor | None, tuple[int, int]]]


def vgg16_features(
    x: torch.Tensor,
    conv_names: list[list[str]],
    layer: LayerLookup,
    *,
    geometry: tuple[int, tuple] | None,
    channels_last: bool,
    matmul_classifier: bool,
    dropout: Callable[[str, torch.Tensor], torch.Tensor] | None = None,
) -> dict[int, torch.Tensor]:
    """:meth:`VGG16Backbone.forward`'s features by the fast paths (shared by inference and training).

    ``geometry`` (from :func:`trim_geometry`, or None for no trim) enables the padding trim;
    ``dropout(name, x)`` is applied after the fc6/fc7 ReLUs when given.
    """
    plan = None if geometry is None else _padding_plan(geometry, x.shape[-2], x.shape[-1])
    if plan is not None:
        rows, cols = plan
        x = F.pad(x, (cols.pad_start, cols.pad_end, rows.pad_start, rows.pad_end))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    features: dict[int, torch.Tensor] = {}
    for stage, names in enumerate(conv_names, start=1):
        for name in names:
            weight, bias, padding = layer(name)
            if plan is not None and name == "conv1_1":
                padding = 0  # padded explicitly above
            x = F.relu_(F.conv2d(x, weight, bias, padding=padding))
        x = F.max_pool2d(x, kernel_size=POOL_KERNEL, stride=POOL_STRIDE, ceil_mode=True)
        if stage == TRIM_LAST_STAGE and plan is not None:
            x = _apply_inserts(_apply_inserts(x, plan[0].inserts, 2), plan[1].inserts, 3)
        if stage in (3, 4):
            features[2**stage] = x
    for name in ("fc6", "fc7"):
        weight, bias, _ = layer(name)
        x = F.relu_(conv_as_matmul(x, weight, bias) if matmul_classifier else F.conv2d(x, weight, bias))
        if dropout is not None:
            x = dropout(name, x)
    features[32] = x
    return features


# --------------------------------------------------------------------------- modules
class FastVGG16Backbone(nn.Module):
    """Inference-only VGG16 backbone computing exactly :class:`VGG16Backbone`'s features, faster.

    Keeps the backbone contract (``channels``, ``coord_maps``, ``forward -> {stride: features}``)
    and does not hold the original module (so ``eval()``/``train()`` on the twin never reach it).
    """

    def __init__(
        self, backbone: VGG16Backbone, *, channels_last: bool = True, trim_padding: bool = True, matmul_classifier: bool = True
    ) -> None:
        super().__init__()
        self.conv_names = backbone.conv_names
        self.channels = backbone.channels
        self.coord_maps = backbone.coord_maps
        self.channels_last = channels_last
        self.matmul_classifier = matmul_classifier
        self.trim_geometry = trim_geometry(backbone) if trim_padding else None
        self.paddings: dict[str, tuple[int, int]] = {}
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        for name in [n for stage in self.conv_names for n in stage] + ["fc6", "fc7"]:
            conv = getattr(backbone, name)
            weight = conv.weight.detach()
            if name.startswith("conv"):
                weight = weight.clone(memory_format=memory_format)  # the snapshot: a layout copy
            self.paddings[name] = tuple(conv.padding)
            self.register_buffer(f"{name}_weight", weight, persistent=False)
            self.register_buffer(f"{name}_bias", conv.bias.detach(), persistent=False)
        self.train(False)

    def train(self, mode: bool = True) -> "FastVGG16Backbone":
        if mode:
            raise RuntimeError("the fast twin is inference-only; train the original model")
        return super().train(False)

    def _layer(self, name: str) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        return getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias"), self.paddings[name]

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        return vgg16_features(x, self.conv_names, self._layer, geometry=self.trim_geometry,
                              channels_last=self.channels_last, matmul_classifier=self.matmul_classifier)  # fmt: skip


class DepthwiseBilinearUpsampling(nn.Module):
    """A :class:`BilinearUpsampling` whose weight is diagonal, run as a depthwise transposed conv."""

    def __init__(self, layer: BilinearUpsampling) -> None:
        super().__init__()
        if not is_diagonal(layer.weight):
            raise ValueError("the upsampling weight has off-diagonal entries; a depthwise layer would change it")
        index = torch.arange(layer.in_channels)
        self.register_buffer("weight", layer.weight.detach()[index, index].unsqueeze(1).clone(), persistent=False)
        self.stride, self.padding = layer.stride, layer.padding
        self.output_padding, self.dilation = layer.output_padding, layer.dilation
        self.groups = layer.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)  # oneDNN's depthwise kernel is 3x faster on NHWC
        return F.conv_transpose2d(
            x, self.weight.to(x.dtype), None, self.stride, self.padding, self.output_padding, self.groups, self.dilation
        )


def is_diagonal(weight: torch.Tensor) -> bool:
    """True when a (C, C, k, k) deconvolution weight is zero off the channel diagonal."""
    if weight.dim() != 4 or weight.shape[0] != weight.shape[1]:
        return False
    off = weight.detach().clone()
    index = torch.arange(weight.shape[0])
    off[index, index] = 0
    return bool((off == 0).all())


class _BFloat16Autocast(nn.Module):
    """Runs a model under bf16 autocast and returns float32 logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.model(x).float()

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)  # preprocessing, num_classes, config, ...


# --------------------------------------------------------------------------- training
def _live_forward(backbone: VGG16Backbone, x: torch.Tensor, *, trim_padding: bool, matmul_classifier: bool) -> dict[int, torch.Tensor]:
    """The backbone's features from its own (trainable) layers by the exact fast paths, dropout included."""

    def layer(name: str) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int]]:
        conv = getattr(backbone, name)
        return conv.weight, conv.bias, tuple(conv.padding)

    drops = {"fc6": backbone.drop6, "fc7": backbone.drop7}
    return vgg16_features(
        x, backbone.conv_names, layer, geometry=trim_geometry(backbone) if trim_padding else None,
        channels_last=backbone.conv1_2.weight.is_contiguous(memory_format=torch.channels_last),
        matmul_classifier=matmul_classifier, dropout=lambda name, t: drops[name](t),
    )  # fmt: skip


def enable_fast_training(model: FCN, *, trim_padding: bool = True, matmul_classifier: bool = True) -> FCN:
    """Make ``model``'s backbone compute its features by the exact fast paths, in training too.

    The padding trim and the matmul ``fc6``/``fc7`` compute the same function of the weights
    (the trimmed band rows are identical for every weight value), so losses and gradients
    equal the faithful ones to fp32 summation-order noise. The layers, parameters,
    ``state_dict`` and dropout are the model's own; the memory format follows the model's
    (channels-last when its weights are, as ``TrainConfig.channels_last`` makes them).
    Undo with ``model.backbone.fast_forward = None``. Returns ``model``.
    """
    if not isinstance(model, FCN) or not isinstance(model.backbone, VGG16Backbone):
        raise TypeError(f"enable_fast_training expects an fcnseg FCN on VGG16, got {type(model).__name__}")
    model.backbone.fast_forward = functools.partial(_live_forward, trim_padding=trim_padding, matmul_classifier=matmul_classifier)
    return model


# --------------------------------------------------------------------------- entry point
def optimize_for_inference(
    model: FCN,
    *,
    channels_last: bool = True,
    trim_padding: bool = True,
    matmul_classifier: bool = True,
    depthwise_upsampling: bool = True,
    bfloat16: bool = False,
    compile: bool = False,
) -> nn.Module:
    """An inference twin of ``model`` that computes the same logits faster.

    Args:
        model: an :class:`FCN` (any stride, width, at-once or not). Not modified.
        channels_last, trim_padding, matmul_classifier, depthwise_upsampling: the exact fast
            paths described in this module's docstring (all on by default; each measured).
        bfloat16: bf16 autocast (changes numerics; off by default).
        compile: wrap the twin in ``torch.compile`` (compiles per input size; off by default).

    Returns:
        An ``FCN``-like module in eval mode (``.preprocessing``, ``.num_classes``, ``.config``
        as the model's) whose forward takes the same blob and returns the same (N, C, H, W)
        logits. Use it under ``torch.inference_mode()``; it cannot be trained.
    """
    if not isinstance(model, FCN):
        raise TypeError(f"optimize_for_inference expects an fcnseg FCN model, got {type(model).__name__}")
    if isinstance(model.backbone, FastVGG16Backbone):
        return model  # already a twin: callers may optimise once and pass the twin on
    twin = copy.copy(model)  # shallow: shares parameters, buffers and the head's layers
    twin._modules = dict(model._modules)  # own module table, so swapping a layer leaves the model alone
    twin.training = False
    twin.backbone = FastVGG16Backbone(
        model.backbone, channels_last=channels_last, trim_padding=trim_padding, matmul_classifier=matmul_classifier
    )
    if depthwise_upsampling:
        for name, layer in model._modules.items():
            if isinstance(layer, BilinearUpsampling) and is_diagonal(layer.weight):
                setattr(twin, name, DepthwiseBilinearUpsampling(layer))
    result: nn.Module = twin
    if bfloat16:
        result = _BFloat16Autocast(result).eval()
    if compile:
        result = torch.compile(result, dynamic=False)  # static shapes: one compiled graph per input size
    return result
