"""Independent oracle: ResTv2 written the way the official code is structured.

Dynamic reshapes that read shapes at run time, ``nn.PixelShuffle``, a fused ``kv`` linear with
the 5-D reshape/permute, and the official module names (``stem.proj.0``, ``attn.kv``,
``attn.up.0`` ...). Its state dict *is* the official checkpoint layout. ``RefResTV2Backbone``
is the official detection/segmentation backbone (four maps through channels-first norms).
Shares no code with the package under test.
"""

from __future__ import annotations

import re

import torch
from torch import nn


class RefMlp(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim * 4)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim * 4, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class RefAttention(nn.Module):
    def __init__(self, dim, num_heads, sr_ratio):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(
                dim,
                dim,
                kernel_size=sr_ratio + 1,
                stride=sr_ratio,
                padding=sr_ratio // 2,
                groups=dim,
            )
            self.sr_norm = nn.LayerNorm(dim, eps=1e-6)
        self.up = nn.Sequential(
            nn.Conv2d(dim, sr_ratio * sr_ratio * dim, 3, 1, 1, groups=dim),
            nn.PixelShuffle(sr_ratio),
        )
        self.up_norm = nn.LayerNorm(dim, eps=1e-6)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, H, W):
        B, N, C = x.shape
        heads = self.num_heads
        q = self.q(x).reshape(B, N, heads, C // heads).permute(0, 2, 1, 3)
        if self.sr_ratio > 1:
            y = x.permute(0, 2, 1).reshape(B, C, H, W)
            y = self.sr(y).reshape(B, C, -1).permute(0, 2, 1)
            x = self.sr_norm(y)
        kv = self.kv(x).reshape(B, -1, 2, heads, C // heads).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(B, N, C)
        identity = v.transpose(-1, -2).reshape(B, C, H // self.sr_ratio, W // self.sr_ratio)
        identity = self.up(identity).flatten(2).transpose(1, 2)
        return self.proj(out + self.up_norm(identity))


class RefBlock(nn.Module):
    def __init__(self, dim, num_heads, sr_ratio):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = RefAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = RefMlp(dim)

    def forward(self, x, H, W):
        x = x + self.attn(self.norm1(x), H, W)
        return x + self.mlp(self.norm2(x))


class RefPA(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.pa_conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return x * self.sigmoid(self.pa_conv(x))


class RefConvStem(nn.Module):
    def __init__(self, in_ch, out_ch):
        super().__init__()
        layers, cin, cout = [], in_ch, out_ch // 2
        for _ in range(2):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
            cin, cout = cout, cout * 2
        layers.append(nn.Conv2d(cin, out_ch, 1))
        self.proj = nn.Sequential(*layers)
        self.pos = RefPA(out_ch)
        self.norm = nn.LayerNorm(out_ch, eps=1e-6)

    def forward(self, x):
        _, _, H, W = x.shape
        x = self.pos(self.proj(x))
        return self.norm(x.flatten(2).transpose(1, 2)), (H // 4, W // 4)


class RefPatchEmbed(nn.Module):
    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, out_ch, 3, 2, 1)
        self.pos = RefPA(out_ch)
        self.norm = nn.LayerNorm(out_ch, eps=1e-6)

    def forward(self, x):
        _, _, H, W = x.shape
        x = self.pos(self.proj(x))
        return self.norm(x.flatten(2).transpose(1, 2)), (H // 2, W // 2)


class RefResTV2(nn.Module):
    def __init__(self, embed_dims, num_heads, depths, sr_ratios, num_classes=1000, in_chans=3):
        super().__init__()
        self.stem = RefConvStem(in_chans, embed_dims[0])
        self.patch_2 = RefPatchEmbed(embed_dims[0], embed_dims[1])
        self.patch_3 = RefPatchEmbed(embed_dims[1], embed_dims[2])
        self.patch_4 = RefPatchEmbed(embed_dims[2], embed_dims[3])
        for i in range(4):
            blocks = [RefBlock(embed_dims[i], num_heads[i], sr_ratios[i]) for _ in range(depths[i])]
            setattr(self, f"stage{i + 1}", nn.ModuleList(blocks))
        self.norm = nn.LayerNorm(embed_dims[3], eps=1e-6)
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.head = nn.Linear(embed_dims[3], num_classes)

    def forward(self, x):
        B = x.shape[0]
        x, (H, W) = self.stem(x)
        for blk in self.stage1:
            x = blk(x, H, W)
        for embed, stage in (
            (self.patch_2, self.stage2),
            (self.patch_3, self.stage3),
            (self.patch_4, self.stage4),
        ):
            x = x.permute(0, 2, 1).reshape(B, -1, H, W)
            x, (H, W) = embed(x)
            for blk in stage:
                x = blk(x, H, W)
        x = self.norm(x)
        x = x.permute(0, 2, 1).reshape(B, -1, H, W)
        return self.head(self.avg_pool(x).flatten(1))


class RefLayerNorm2d(nn.Module):
    """The official channels-first LayerNorm (its ``utils.LayerNorm``, data_format
    "channels_first"): statistics over dim 1 of an NCHW map, written out by hand."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class RefResTV2Backbone(nn.Module):
    """The official detection/segmentation backbone (object_detection/restv2/restv2.py,
    semantic_segmentation/backbone/rest_v2.py): no final norm, no head; every stage's tokens
    go back to an NCHW map through its own channels-first LayerNorm ``norm_1..norm_4``.

    ``norms``: "detectron2" wraps each norm in ``nn.Sequential`` (keys ``norm_<i>.0.*``),
    "mmseg" keeps it bare (``norm_<i>.*``), None has no norms (classification weights).
    Returns the four maps as a tuple, strides 4, 8, 16, 32.
    """

    def __init__(self, embed_dims, num_heads, depths, sr_ratios, in_chans=3, norms="mmseg"):
        super().__init__()
        self.stem = RefConvStem(in_chans, embed_dims[0])
        self.patch_2 = RefPatchEmbed(embed_dims[0], embed_dims[1])
        self.patch_3 = RefPatchEmbed(embed_dims[1], embed_dims[2])
        self.patch_4 = RefPatchEmbed(embed_dims[2], embed_dims[3])
        for i in range(4):
            blocks = [RefBlock(embed_dims[i], num_heads[i], sr_ratios[i]) for _ in range(depths[i])]
            setattr(self, f"stage{i + 1}", nn.ModuleList(blocks))
        self.has_norms = norms is not None
        for i in range(4 if self.has_norms else 0):
            layer = RefLayerNorm2d(embed_dims[i])
            if norms == "detectron2":
                layer = nn.Sequential(layer)
            setattr(self, f"norm_{i + 1}", layer)

    def forward(self, x):
        B = x.shape[0]
        outs = []
        embeds = (self.stem, self.patch_2, self.patch_3, self.patch_4)
        stages = (self.stage1, self.stage2, self.stage3, self.stage4)
        for i, (embed, stage) in enumerate(zip(embeds, stages)):
            x, (H, W) = embed(x)
            for blk in stage:
                x = blk(x, H, W)
            x = x.permute(0, 2, 1).reshape(B, -1, H, W)
            outs.append(getattr(self, f"norm_{i + 1}")(x) if self.has_norms else x)
        return tuple(outs)


REF_VARIANTS = {
    "T": {"embed_dims": [96, 192, 384, 768], "num_heads": [1, 2, 4, 8], "depths": [1, 2, 6, 2]},
    "S": {"embed_dims": [96, 192, 384, 768], "num_heads": [1, 2, 4, 8], "depths": [1, 2, 12, 2]},
    "B": {"embed_dims": [96, 192, 384, 768], "num_heads": [1, 2, 4, 8], "depths": [1, 3, 16, 3]},
    "L": {"embed_dims": [128, 256, 512, 1024], "num_heads": [2, 4, 8, 16], "depths": [2, 3, 16, 2]},
}


NORM_WEIGHTS = ("norm.weight", "norm1.weight", "norm2.weight", "_norm.weight")


def reference_model(variant="T", num_classes=1000, **overrides):
    spec = {**REF_VARIANTS.get(variant, {}), "sr_ratios": [8, 4, 2, 1], **overrides}
    return RefResTV2(num_classes=num_classes, **spec).eval()


def reference_backbone(variant="T", norms="mmseg", **overrides):
    spec = {**REF_VARIANTS.get(variant, {}), "sr_ratios": [8, 4, 2, 1], **overrides}
    spec.pop("num_classes", None)
    return RefResTV2Backbone(norms=norms, **spec).eval()


def randomize_(model, seed=0):
    """Every tensor random: weights, biases, norm affines and BN running statistics."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith(NORM_WEIGHTS) or re.fullmatch(r"norm_\d(\.0)?\.weight", name):
                tensor.copy_(1.0 + 0.2 * torch.randn(tensor.shape, generator=gen))
            else:
                fan_in = tensor[0].numel() if tensor.ndim > 1 else 1
                std = 0.1 if tensor.ndim <= 1 else (1.0 / fan_in) ** 0.5
                tensor.copy_(std * torch.randn(tensor.shape, generator=gen))
    return model
