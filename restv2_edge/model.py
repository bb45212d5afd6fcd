"""ResTv2 in export-friendly form.

Same function as the official ``models/rest_v2.py`` (wofmanaf/ResT), rewritten so that every
shape is fixed when the model is built: the input resolution is a constructor argument, token
grids are Python constants, no tensor has rank > 4, and no reshape reads a shape at run time
(the batch dimension is never touched by a reshape, so eager training still takes any batch).

Differences in structure, not in function:
- ``kv`` is split into ``k`` and ``v`` linears (no 5-D reshape/permute); see ``checkpoint.py``
  for the key mapping to the official layout.
- The V-upsampling branch (depthwise 3x3 conv + pixel shuffle) has a static factor and grid.

Two heads (``HEADS``): ``classifier`` (the official ``models/rest_v2.py``) and ``features``,
the official detection/segmentation backbone (``object_detection/restv2/restv2.py``,
``semantic_segmentation/backbone/rest_v2.py``): four NCHW stage maps, strides 4..32, each
through its own channels-first LayerNorm (docs/backbone.md). The input size is one side or
(height, width), each a multiple of 32.

One set of weights, six graph forms (``GraphForm``), chosen per target by measurement
(docs/graph-forms.md):
- ``native``: native LayerNorm, 4-D multi-head matmuls, native pixel shuffle (depth-to-space).
- ``decomposed``: everything as linear/bmm/conv so that one XNNPACK delegate takes the whole
  graph: LayerNorm statistics as ``F.linear`` by a constant 1/C row, per-head 3-D matmuls,
  a rank-4 pixel shuffle (conv weights stored in (i, j, c) channel order), mean pooling as a
  linear.
- ``native-depthwise``: native, except that the V upsampling repeats each channel r*r times
  and runs the same filters as a depthwise conv (a runtime's depthwise kernel instead of its
  grouped one; same weights and checkpoint layout as native).
- ``native-convtranspose``: native, except that the V upsampling (3x3 conv, r*r outputs per
  channel, pixel shuffle) is one depthwise transposed conv (stride r, kernel 3r, padding r)
  with the same filters rearranged: no depth-to-space (same weights and checkpoint layout).
- ``native-pointwise``: native, except that each block's MLP runs on the (B, C, H, W) map as
  two 1x1 convs (onnxruntime's NCHWc pointwise kernels instead of its Gemm; same weights).
- ``native-onehead-batched``: native, except that a one-head attention (T's stage 1) splits
  its query rows into two halves and runs both matmuls as a batch of two against K/V stacked
  twice: litert-torch writes a one-head ``q @ k^T`` as a ``FULLY_CONNECTED`` with an
  activation for weights, which XNNPACK refuses, and a batched one as ``BATCH_MATMUL``,
  which it takes (same weights; the batch axis untouched).
"""

from __future__ import annotations

import copy
import enum
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from restv2_edge.config import ImageSize, ModelConfig, canonical_image_size, image_hw
from restv2_edge.errors import ConfigError

LN_EPS = 1e-6


class GraphForm(str, enum.Enum):
    NATIVE = "native"
    DECOMPOSED = "decomposed"
    #: native, but the V upsampling repeats each channel r*r times and convolves depthwise
    NATIVE_DEPTHWISE = "native-depthwise"
    #: native, but the V upsampling and its pixel shuffle are one depthwise transposed conv
    NATIVE_CONVTRANSPOSE = "native-convtranspose"
    #: native, but each block's MLP runs as two 1x1 convs on the feature map
    NATIVE_POINTWISE = "native-pointwise"
    #: native, but a one-head attention runs as a batch of two matmuls (query rows halved)
    NATIVE_ONEHEAD_BATCHED = "native-onehead-batched"


class LayerNorm(nn.LayerNorm):
    """LayerNorm over the last dim; in the decomposed form its means are linears."""

    def __init__(self, dim: int, form: GraphForm) -> None:
        super().__init__(dim, eps=LN_EPS)
        self.form = form
        if form is GraphForm.DECOMPOSED:
            self.register_buffer("mean_row", torch.full((1, dim), 1.0 / dim), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form is not GraphForm.DECOMPOSED:
            return super().forward(x)
        centered = x - F.linear(x, self.mean_row)
        variance = F.linear(centered * centered, self.mean_row)
        return centered * torch.rsqrt(variance + self.eps) * self.weight + self.bias


def tokens_to_map(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W) feature map: a reshape to (B, H, W, C), then one
    4-D permute. A converter to a channels-last runtime puts the inverse permute in front of
    the conv, right after this one, and the pair cancels; transpose-then-reshape left a
    reshape between them and both transposes in the graph (docs/graph-forms.md)."""
    return x.unflatten(1, grid).permute(0, 3, 1, 2)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) feature map -> (B, H*W, C) tokens: one 4-D permute to (B, H, W, C),
    then a reshape (the mirror of ``tokens_to_map``)."""
    return x.permute(0, 2, 3, 1).flatten(1, 2)


class Mlp(nn.Module):
    def __init__(self, dim: int, form: GraphForm, grid: tuple[int, int]) -> None:
        super().__init__()
        self.form = form
        self.grid = grid
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form is GraphForm.NATIVE_POINTWISE:
            return self._pointwise(x)
        return self.fc2(self.act(self.fc1(x)))

    def _pointwise(self, x: torch.Tensor) -> torch.Tensor:
        """The two linears as 1x1 convs on the (B, C, H, W) map, their weights viewed as
        (out, in, 1, 1): the same parameters, so the same checkpoint layout."""
        y = F.conv2d(tokens_to_map(x, self.grid), self.fc1.weight[:, :, None, None], self.fc1.bias)
        y = F.conv2d(self.act(y), self.fc2.weight[:, :, None, None], self.fc2.bias)
        return map_to_tokens(y)


class Attention(nn.Module):
    """EMSAv2: K/V from a strided depthwise conv + LayerNorm, plus an upsampled-V branch."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int,
        grid: tuple[int, int],
        form: GraphForm,
    ) -> None:
        super().__init__()
        height, width = grid
        if height % sr_ratio or width % sr_ratio:
            raise ConfigError(f"sr ratio {sr_ratio} does not divide the {height}x{width} grid")
        self.form = form
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q_prescaled = False  # set by fold_attention_scale: ``scale`` lives in ``q``
        self.dim = dim
        self.sr_ratio = sr_ratio
        self.grid = grid
        self.reduced_grid = (height // sr_ratio, width // sr_ratio)

        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(
                dim, dim, sr_ratio + 1, stride=sr_ratio, padding=sr_ratio // 2, groups=dim
            )
            self.sr_norm = LayerNorm(dim, form)
        up_channels = sr_ratio * sr_ratio * dim
        # Decomposed form: input repeated r*r times, one filter per output channel, channels
        # in (i, j, c) order -- same weight shape, rows permuted (checkpoint.py maps them).
        up_in = up_channels if form is GraphForm.DECOMPOSED else dim
        self.up = nn.Conv2d(up_in, up_channels, 3, padding=1, groups=up_in)
        if form is GraphForm.NATIVE_DEPTHWISE:
            ones = torch.ones(1, 1, sr_ratio * sr_ratio, 1)
            self.register_buffer("repeat_ones", ones, persistent=False)
        self.up_norm = LayerNorm(dim, form)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.q(x) if self.q_prescaled else self.q(x) * self.scale
        if self.sr_ratio > 1:
            x = map_to_tokens(self.sr(tokens_to_map(x, self.grid)))
            x = self.sr_norm(x)
        k = self.k(x)
        v = self.v(x)
        if self.form is GraphForm.DECOMPOSED:
            out = self._attend_3d(q, k, v)
        else:
            out = self._attend_4d(q, k, v)
        identity = self._upsample(tokens_to_map(v, self.reduced_grid))
        return self.proj(out + self.up_norm(identity))

    @property
    def half_tokens(self) -> int | None:
        """Query rows per half when this one-head attention runs as a batch of two (the
        ``native-onehead-batched`` form, an even token count), else None."""
        tokens = self.grid[0] * self.grid[1]
        batched = self.form is GraphForm.NATIVE_ONEHEAD_BATCHED and self.num_heads == 1
        return tokens // 2 if batched and tokens % 2 == 0 else None

    def _attend_4d(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.half_tokens is not None:
            return self._attend_one_head_batched(q, k, v)
        split = (self.num_heads, self.head_dim)
        q = q.unflatten(2, split).transpose(1, 2)
        k = k.unflatten(2, split).transpose(1, 2)
        v = v.unflatten(2, split).transpose(1, 2)
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return (attn @ v).transpose(1, 2).flatten(2)

    def _attend_one_head_batched(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """One head as two: query rows (B, 2, N/2, C) against K and V stacked (B, 2, M, C).
        Each query row still sees every key, so the function is the same."""
        halves = q.unflatten(1, (2, self.half_tokens))
        keys, values = torch.stack([k, k], dim=1), torch.stack([v, v], dim=1)
        attn = (halves @ keys.transpose(-2, -1)).softmax(dim=-1)
        return (attn @ values).flatten(1, 2)

    def _attend_3d(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        outs = []
        for head in range(self.num_heads):
            part = slice(head * self.head_dim, (head + 1) * self.head_dim)
            if self.num_heads > 1:
                qh, kh, vh = q[..., part], k[..., part], v[..., part]
            else:
                qh, kh, vh = q, k, v
            attn = torch.bmm(qh, kh.transpose(1, 2)).softmax(dim=-1)
            outs.append(torch.bmm(attn, vh))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)

    def _upsample_transposed(self, v_map: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) reduced V -> (B, H*W, C) tokens, the conv and pixel shuffle as one
        transposed conv."""
        r = self.sr_ratio
        h, w = self.reduced_grid
        filters = convtranspose_filters(self.up.weight, r)
        y = F.conv_transpose2d(v_map, filters, None, stride=r, padding=r, groups=self.dim)
        y = y.flatten(2).unflatten(2, (h, r * w * r)) + convtranspose_bias(self.up.bias, r, w)
        return y.flatten(2).transpose(1, 2)

    def _upsample(self, v_map: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) reduced V -> (B, H*W, C) tokens at full resolution."""
        r = self.sr_ratio
        if r == 1:
            return map_to_tokens(self.up(v_map))
        if self.form in (
            GraphForm.NATIVE,
            GraphForm.NATIVE_POINTWISE,
            GraphForm.NATIVE_ONEHEAD_BATCHED,
        ):
            return map_to_tokens(F.pixel_shuffle(self.up(v_map), r))
        if self.form is GraphForm.NATIVE_DEPTHWISE:
            # Channel c repeated r*r times (a broadcast multiply by ones: exact, and no Expand
            # or Tile op) becomes channels c*r*r..c*r*r+r*r-1, what the grouped conv's filters
            # for c read; the same filters then run as a depthwise conv (multiplier 1).
            repeated = (v_map.flatten(2).unsqueeze(2) * self.repeat_ones).flatten(1, 2)
            y = F.conv2d(
                repeated.unflatten(2, self.reduced_grid),
                self.up.weight,
                self.up.bias,
                padding=1,
                groups=self.up.out_channels,
            )
            return map_to_tokens(F.pixel_shuffle(y, r))
        if self.form is GraphForm.NATIVE_CONVTRANSPOSE:
            return self._upsample_transposed(v_map)
        # Rank-4 pixel shuffle. Channels are (i, j, c); target token order (hh, i, ww, j) x c.
        h, w = self.reduced_grid
        dim = self.dim
        y = self.up(v_map.repeat(1, r * r, 1, 1))  # (B, r*r*C, h, w)
        y = y.flatten(2).unflatten(1, (r, r * dim))  # (B, i, (j c), (hh ww))
        y = y.transpose(2, 3).flatten(2).unflatten(2, (h, w * r * dim))  # (B, i, hh, (ww j c))
        y = y.transpose(1, 2).flatten(1)  # (B, hh i ww j c)
        return y.unflatten(1, (h * r * w * r, dim))


def convtranspose_filters(weight: torch.Tensor, r: int) -> torch.Tensor:
    """The upsampling conv's filters (C*r*r, 1, 3, 3), output channel c*r*r + i*r + j, as
    the filters (C, 1, 3r, 3r) of a depthwise transposed conv with stride r and padding r.

    Output pixel (y*r + i, x*r + j) of conv-then-pixel-shuffle reads input (y + a - 1,
    x + b - 1) with tap (a, b) of filter (c, i, j); a transposed conv with stride r and
    padding r reaches it from that input through kernel position ((2 - a) r + i, (2 - b) r + j).
    Every step stays rank 4.
    """
    channels = weight.shape[0] // (r * r)
    taps = weight.reshape(channels * r, r, 3, 3).flip(2, 3)  # ((c, i), j, 2 - a, 2 - b)
    taps = taps.permute(0, 2, 3, 1).reshape(channels, r, 3, 3 * r)  # (c, i, 2 - a, (2 - b, j))
    return taps.permute(0, 2, 1, 3).reshape(channels, 1, 3 * r, 3 * r)


def convtranspose_bias(bias: torch.Tensor, r: int, width: int) -> torch.Tensor:
    """The upsampling conv's bias, one per (c, i, j) (a transposed conv's own bias is one
    per c), as a (1, C, 1, r*width*r) constant added to the output map viewed as
    (B, C, h, (i, x, j)): one row of values per channel, broadcast over the h reduced rows,
    not a whole (C, H, W) map of constants."""
    per_phase = bias.reshape(-1, r, 1, r).repeat(1, 1, width, 1)  # (c, i, x, j)
    return per_phase.flatten(1).unsqueeze(0).unsqueeze(2)


def fold_attention_scale(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose attentions carry their 1/sqrt(head_dim) scale in the ``q``
    linear: the same function up to float rounding, one multiply fewer per block in every
    exported graph (the export pipeline applies it; eager models and checkpoints never do)."""
    folded = copy.deepcopy(module)
    with torch.no_grad():
        for attention in folded.modules():
            if isinstance(attention, Attention) and not attention.q_prescaled:
                attention.q.weight.mul_(attention.scale)
                attention.q.bias.mul_(attention.scale)
                attention.q_prescaled = True
    return folded


class Block(nn.Module):
    def __init__(
        self, dim: int, num_heads: int, sr_ratio: int, grid: tuple[int, int], form: GraphForm
    ) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, form)
        self.attn = Attention(dim, num_heads, sr_ratio, grid, form)
        self.norm2 = LayerNorm(dim, form)
        self.mlp = Mlp(dim, form, grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PA(nn.Module):
    """Pixel-attention positional gating: x * sigmoid(dwconv3x3(x))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pa_conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.pa_conv(x))


class ConvStem(nn.Module):
    """Two stride-2 3x3 conv+BN+ReLU, a 1x1 projection, PA, LayerNorm: stride 4."""

    def __init__(self, in_chans: int, out_dim: int, form: GraphForm) -> None:
        super().__init__()
        mid = out_dim // 2
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, mid, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(),
            nn.Conv2d(mid, out_dim, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(out_dim),
            nn.ReLU(),
            nn.Conv2d(out_dim, out_dim, 1),
        )
        self.pos = PA(out_dim)
        self.norm = LayerNorm(out_dim, form)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(map_to_tokens(self.pos(self.proj(x))))


class PatchEmbed(nn.Module):
    """Stride-2 3x3 conv, PA, LayerNorm."""

    def __init__(self, in_dim: int, out_dim: int, form: GraphForm) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_dim, out_dim, 3, stride=2, padding=1)
        self.pos = PA(out_dim)
        self.norm = LayerNorm(out_dim, form)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(map_to_tokens(self.pos(self.proj(x))))


#: what the network ends in: ``classifier`` (logits) or ``features`` (four stage maps)
HEADS = ("classifier", "features")
#: the features head's output norms: trained ``norm_1..norm_4`` layers (a detection or
#: segmentation checkpoint, or a model built without weights) or none (classification weights)
OUTPUT_NORMS = ("checkpoint", "identity")
#: the features head's outputs, in order (the official detectron2 backbone's feature names)
FEATURE_NAMES = ("stage1", "stage2", "stage3", "stage4")
FEATURE_STRIDES = (4, 8, 16, 32)


@dataclass(frozen=True)
class OutputSpec:
    """One model output: ``name``, ``shape`` (batch first), ``stride`` and ``channels`` for a
    feature map (``stride`` None for logits)."""

    name: str
    shape: tuple[int, ...]
    stride: int | None
    channels: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "stride": self.stride,
            "channels": self.channels,
        }


class ResTV2(nn.Module):
    """ResTv2 for a fixed input resolution. Input: (B, 3, H, W) normalized RGB.

    ``head`` "classifier": final LayerNorm, mean pooling, linear -> (B, num_classes) logits.
    ``head`` "features": the official detection/segmentation backbone -- a tuple of the four
    stage outputs (B, C_i, H/s, W/s) for s = 4, 8, 16, 32, each through its own channels-first
    LayerNorm ``norm_1..norm_4`` (``output_norms`` "checkpoint"), or straight out of the
    stage (``output_norms`` "identity", for classification weights, which have no such norms).
    ``image_size``: one side or (height, width), each a multiple of 32.
    """

    def __init__(
        self,
        config: ModelConfig,
        image_size: ImageSize = 224,
        form: GraphForm | str = GraphForm.NATIVE,
        head: str = "classifier",
        output_norms: str = "checkpoint",
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ConfigError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
        if output_norms not in OUTPUT_NORMS:
            raise ConfigError(
                f"unknown output_norms {output_norms!r}; choose one of {', '.join(OUTPUT_NORMS)}"
            )
        self.config = config
        self.input_hw = image_hw(image_size)
        self.image_size = canonical_image_size(image_size)
        self.form = form = GraphForm(form)
        self.head_type = head
        self.output_norms = output_norms if head == "features" else None
        dims, heads, depths, ratios = (
            config.embed_dims,
            config.num_heads,
            config.depths,
            config.sr_ratios,
        )
        height, width = self.input_hw
        self.grids = [(height // s, width // s) for s in FEATURE_STRIDES]

        self.stem = ConvStem(config.in_chans, dims[0], form)
        self.patch_2 = PatchEmbed(dims[0], dims[1], form)
        self.patch_3 = PatchEmbed(dims[1], dims[2], form)
        self.patch_4 = PatchEmbed(dims[2], dims[3], form)
        for index in range(4):
            blocks = [
                Block(dims[index], heads[index], ratios[index], self.grids[index], form)
                for _ in range(depths[index])
            ]
            self.add_module(f"stage{index + 1}", nn.ModuleList(blocks))
        if head == "classifier":
            self.norm = LayerNorm(dims[3], form)
            self.head = nn.Linear(dims[3], config.num_classes)
        elif output_norms == "checkpoint":
            # channels-first LayerNorm on the map == LayerNorm over C on the tokens
            for index in range(4):
                self.add_module(f"norm_{index + 1}", LayerNorm(dims[index], form))
        if head == "classifier" and form is GraphForm.DECOMPOSED:
            tokens = math.prod(self.grids[3])
            self.register_buffer(
                "pool_row", torch.full((1, tokens), 1.0 / tokens), persistent=False
            )
        self.apply(_init_weights)
        self.eval()

    @property
    def stages(self) -> list[nn.ModuleList]:
        return [self.stage1, self.stage2, self.stage3, self.stage4]

    def stage_tokens(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> each stage's output tokens (B, H_i*W_i, C_i), before any norm."""
        embeds = [self.stem, self.patch_2, self.patch_3, self.patch_4]
        outs = []
        for index, (embed, stage) in enumerate(zip(embeds, self.stages)):
            if index > 0:
                x = tokens_to_map(x, self.grids[index - 1])
            x = embed(x)
            for block in stage:
                x = block(x)
            outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Classifier: (B, 3, H, W) -> final-normed tokens (B, (H/32)*(W/32), C4)."""
        return self.norm(self.stage_tokens(x)[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        if self.head_type == "features":
            return self.forward_maps(x)
        x = self.forward_features(x)
        if self.form is not GraphForm.DECOMPOSED:
            pooled = x.mean(dim=1)
        else:
            pooled = F.linear(x.transpose(1, 2), self.pool_row).flatten(1)
        return self.head(pooled)

    def forward_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Features head: (B, 3, H, W) -> four NCHW maps at strides 4, 8, 16, 32."""
        maps = []
        for index, tokens in enumerate(self.stage_tokens(x)):
            if self.output_norms == "checkpoint":
                tokens = getattr(self, f"norm_{index + 1}")(tokens)
            maps.append(tokens_to_map(tokens, self.grids[index]))
        return tuple(maps)

    def output_specs(self, batch: int = 1) -> list[OutputSpec]:
        """The outputs in order: ``logits`` or ``stage1..stage4`` (the names an export gives
        its outputs, and what a manifest's ``outputs`` list records)."""
        if self.head_type == "classifier":
            classes = self.config.num_classes
            return [OutputSpec("logits", (batch, classes), None, classes)]
        return [
            OutputSpec(name, (batch, channels, *grid), stride, channels)
            for name, stride, channels, grid in zip(
                FEATURE_NAMES, FEATURE_STRIDES, self.config.embed_dims, self.grids
            )
        ]


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class RawInput(nn.Module):
    """Takes raw RGB 0-255 and normalizes inside the graph: x * (1/(255*std)) - mean/std."""

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("gain", 1.0 / (255.0 * std_t), persistent=False)
        self.register_buffer("offset", -mean_t / std_t, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x * self.gain + self.offset)
