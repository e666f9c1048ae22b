"""detectron2's ResNet backbone (``build_resnet_backbone``) with frozen BatchNorm, as MaskFormer uses it.

Keys are detectron2's: ``stem.conv1``, ``res{2..5}.{i}.conv{1,2,3}`` and ``res{k}.0.shortcut``, each conv
holding its norm as ``<conv>.norm`` (detectron2's ``Conv2d`` wrapper). Basic stem (7×7/2 conv, norm, ReLU,
3×3/2 max pool), bottleneck blocks with the stride on the 3×3 conv (``STRIDE_IN_1X1=False``), one group, width
64, no dilation. ``reparameterize()`` folds every frozen BatchNorm into its conv (it then gets a bias).

The "c" variants (``R101c``: detectron2's DeepLab ``build_resnet_deeplab_backbone`` with ``STEM_TYPE deeplab``,
``STEM_OUT_CHANNELS 128``, ``RES5_MULTI_GRID [1, 2, 4]``) replace the stem by three 3×3 convs (``stem.conv1``
64 channels, stride 2; ``conv2`` 64; ``conv3`` 128; each with norm and ReLU; then the max pool) and dilate
res5's 3×3 convs by 1, 2 and 4, block by block (res5 keeps its stride 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FROZEN_BN_EPS = 1e-5
STEM_CHANNELS = 64
RES2_CHANNELS = 256
# Bottleneck blocks per stage (res2..res5).
RESNET_DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
DEEPLAB_STEM_CHANNELS = 128
DEEPLAB_RES5_MULTI_GRID = (1, 2, 4)


class FrozenBatchNorm2d(nn.Module):
    """detectron2's ``FrozenBatchNorm2d``: an eval-mode BatchNorm whose affine and statistics are buffers
    (keys ``weight``, ``bias``, ``running_mean``, ``running_var``; no ``num_batches_tracked``)."""

    weight: torch.Tensor
    bias: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor

    def __init__(self, channels: int, eps: float = FROZEN_BN_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) with ``self(x) = scale·x + shift`` per channel."""
        scale = self.weight / torch.sqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale


class NormConv2d(nn.Conv2d):
    """detectron2's ``Conv2d`` wrapper: a conv followed by its ``norm`` child (keys ``weight``, ``norm.*``).

    A frozen BatchNorm folds into the conv on ``reparameterize()``; other norms (GroupNorm) stay.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        *,
        norm: nn.Module,
        bias: bool = False,
        dilation: int = 1,
    ):
        super().__init__(cin, cout, kernel, stride, padding=dilation * (kernel // 2), dilation=dilation, bias=bias)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        if not isinstance(self.norm, FrozenBatchNorm2d):
            return
        scale, shift = self.norm.affine()
        bias = self.bias if self.bias is not None else torch.zeros_like(shift)
        self.weight = nn.Parameter(self.weight * scale.reshape(-1, 1, 1, 1))
        self.bias = nn.Parameter(bias * scale + shift)
        self.norm = nn.Identity()


def frozen_conv(cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1) -> NormConv2d:
    """A bias-free conv with a frozen BatchNorm, detectron2's ResNet layer."""
    return NormConv2d(cin, cout, kernel, stride, norm=FrozenBatchNorm2d(cout), dilation=dilation)


class BasicStem(nn.Module):
    """7×7/2 conv (``conv1``) + norm + ReLU + 3×3/2 max pool (padding 1): stride 4."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = frozen_conv(3, STEM_CHANNELS, 7, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class DeepLabStem(nn.Module):
    """Three 3×3 convs (``conv1`` stride 2 → 64, ``conv2`` → 64, ``conv3`` → 128), each + norm + ReLU, then the
    3×3/2 max pool: stride 4."""

    def __init__(self) -> None:
        super().__init__()
        half = DEEPLAB_STEM_CHANNELS // 2
        self.conv1 = frozen_conv(3, half, 3, 2)
        self.conv2 = frozen_conv(half, half, 3)
        self.conv3 = frozen_conv(half, DEEPLAB_STEM_CHANNELS, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv3(F.relu(self.conv2(F.relu(self.conv1(x))))))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    """1×1 → 3×3 (stride) → 1×1 convs with norms, ReLU after the first two and after the residual sum.

    ``shortcut`` (1×1 conv with stride + norm) exists when the channels change, else the input is added.
    """

    def __init__(self, cin: int, cout: int, bottleneck: int, stride: int, dilation: int = 1) -> None:
        super().__init__()
        self.shortcut = frozen_conv(cin, cout, 1, stride) if cin != cout else None
        self.conv1 = frozen_conv(cin, bottleneck, 1)
        self.conv2 = frozen_conv(bottleneck, bottleneck, 3, stride, dilation)
        self.conv3 = frozen_conv(bottleneck, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv3(F.relu(self.conv2(F.relu(self.conv1(x)))))
        return F.relu(out + (self.shortcut(x) if self.shortcut is not None else x))


class ResNet(nn.Module):
    """detectron2 ResNet-50/101 (``deeplab``: the "c" variant, see the module doc): ``forward(x)`` gives
    [res2, res3, res4, res5] at strides 4, 8, 16, 32."""

    def __init__(self, depth: int, *, deeplab: bool = False) -> None:
        super().__init__()
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"unknown ResNet depth {depth}; choose one of {', '.join(map(str, RESNET_DEPTHS))}")
        self.stem: nn.Module = DeepLabStem() if deeplab else BasicStem()
        self.out_channels: list[int] = []
        cin = DEEPLAB_STEM_CHANNELS if deeplab else STEM_CHANNELS
        cout, bottleneck = RES2_CHANNELS, STEM_CHANNELS
        for stage, blocks in enumerate(RESNET_DEPTHS[depth]):
            first_stride = 1 if stage == 0 else 2
            dilations = DEEPLAB_RES5_MULTI_GRID if deeplab and stage == 3 else (1,) * blocks
            layers = [BottleneckBlock(cin, cout, bottleneck, first_stride, dilations[0])]
            layers += [BottleneckBlock(cout, cout, bottleneck, 1, dilations[i]) for i in range(1, blocks)]
            self.add_module(f"res{stage + 2}", nn.Sequential(*layers))
            self.out_channels.append(cout)
            cin, cout, bottleneck = cout, cout * 2, bottleneck * 2

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for stage in range(2, 6):
            x = getattr(self, f"res{stage}")(x)
            features.append(x)
        return features
