"""``fast_net``: the network of the fast recipe (after Keller Jordan's airbench94, 2024), ~2.0M params.

    whiten (2x2 conv, 24 ch, fixed; initialised from data) -> GELU
    3 x [conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU]   widths 64, 256, 256
    global max-pool -> Linear(256, 10, no bias) -> x 1/9

Why each piece (effects measured in docs/benchmarks.md, "fast recipe ablations"):

* Patch whitening: the first layer's 2x2 filters are the eigenvectors of the training images' 2x2-patch
  covariance scaled by 1/sqrt(eigenvalue) (and their negatives, so GELU keeps both signs). The network starts
  from decorrelated inputs instead of spending epochs learning them; the layer is frozen (its weights are a
  statistic of the data, not learnt). ``init_from_data(images)`` sets it; the trainer calls it before step 0.
* Identity (dirac) init of the other convs: each conv starts as the identity on its first input channels
  plus its usual random init, so a deep stack starts close to a shallow one and trains fast from step 0.
* BatchNorm with its scale frozen at 1 (only the shift is learnt, at a higher LR: ``optim.bn_bias_lr_mult``):
  with BN the scale is redundant with the next conv's weights, and freezing it removes a degree of freedom
  that only slows the optimiser. Momentum 0.4 (torch's convention, i.e. 0.6 of the old value kept): the
  running statistics follow the fast-moving weights of a short run.
* Max-pool before BN, global max-pool, and the logits scaled by 1/9: cheaper (BN and GELU at 1/4 the
  positions) and the scale keeps the initial logits small, which suits label smoothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.models.layers import check_positive
from cifarlab.models.registry import register


class FrozenScaleBN(nn.BatchNorm2d):
    """BatchNorm2d whose scale (weight) is fixed at 1: only the shift (bias) is trained.

    ``frozen_scale=False`` is the ordinary BatchNorm2d (the ablation of this piece)."""

    def __init__(self, num_features: int, momentum: float = 0.4, eps: float = 1e-12,
                 frozen_scale: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad_(not frozen_scale)


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int, bn_momentum: float, frozen_bn_scale: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = FrozenScaleBN(cout, bn_momentum, frozen_scale=frozen_bn_scale)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = FrozenScaleBN(cout, bn_momentum, frozen_scale=frozen_bn_scale)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


def dirac_init_(conv: nn.Conv2d) -> None:
    """The first min(in, out) filters become identities (channel i -> i); the others keep their random init."""
    with torch.no_grad():
        torch.nn.init.dirac_(conv.weight[: min(conv.in_channels, conv.out_channels)])


def patch_whitening(images: torch.Tensor, kernel: int = 2, eps: float = 5e-4) -> torch.Tensor:
    """Filters (2*C*k*k, C, k, k) that whiten the k x k patches of ``images`` (N, C, H, W, float, normalised).

    W = [V / sqrt(lambda + eps); -V / sqrt(lambda + eps)] with (lambda, V) the eigenpairs of the patches'
    covariance: the first half of the outputs have (near) identity covariance on these patches.
    """
    c = images.shape[1]
    patches = F.unfold(images.double(), kernel).transpose(1, 2).reshape(-1, c * kernel * kernel)
    patches = patches - patches.mean(0, keepdim=True)
    cov = patches.T @ patches / (len(patches) - 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)
    # eigh returns ascending eigenvalues; largest first reads better in the filter grid.
    eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
    filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps).view(-1, 1)).view(-1, c, kernel, kernel)
    return torch.cat([filters, -filters]).float()


WHITEN_MODES = ("data", "learned")


class FastNet(nn.Module):
    """The options other than ``widths`` exist to ablate one piece at a time (``fast_ablations`` sweep):
    ``whiten="learned"`` makes the 2x2 stem an ordinary trained conv (default init), ``dirac=False`` keeps
    the convs' default init, ``frozen_bn_scale=False`` trains the BN scales. ``whiten_bias_epochs=N`` is
    airbench's treatment of the stem's bias (weights' LR, frozen after N epochs); None (default, as fast_cpu was
    measured) trains it throughout with the BN shifts' LR multiplier."""

    def __init__(self, num_classes: int = 10, widths: Sequence[int] = (64, 256, 256), whiten_kernel: int = 2,
                 bn_momentum: float = 0.4, scale: float = 1 / 9, whiten: str = "data", dirac: bool = True,
                 frozen_bn_scale: bool = True, whiten_bias_epochs: int | None = None) -> None:
        super().__init__()
        check_positive("widths", tuple(widths))
        if len(widths) != 3:
            raise ValueError(f"fast_net has 3 conv groups: widths needs 3 values, got {tuple(widths)}")
        if whiten_bias_epochs is not None and whiten_bias_epochs < 0:
            raise ValueError(f"fast_net whiten_bias_epochs must be >= 0 or null, got {whiten_bias_epochs}")
        if whiten not in WHITEN_MODES:
            raise ValueError(f"fast_net whiten must be one of {', '.join(WHITEN_MODES)}, got {whiten!r}")
        whiten_width = 2 * 3 * whiten_kernel**2
        self.whiten_from_data = whiten == "data"
        self.whiten_bias_epochs = whiten_bias_epochs
        self.whiten = nn.Conv2d(3, whiten_width, whiten_kernel, padding=0, bias=True)
        # From data, the filters are a statistic of the images (init_from_data), not learnt.
        self.whiten.weight.requires_grad_(not self.whiten_from_data)
        self.act = nn.GELU()
        layers, cin = [], whiten_width
        for w in widths:
            layers.append(ConvGroup(cin, int(w), bn_momentum, frozen_bn_scale))
            cin = int(w)
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(cin, num_classes, bias=False)
        self.scale = scale
        if dirac:
            for m in self.modules():
                if isinstance(m, nn.Conv2d) and m is not self.whiten:
                    dirac_init_(m)

    def weight_group_params(self) -> list[nn.Parameter]:
        """With ``whiten_bias_epochs`` set (airbench's treatment), the whitening bias trains at the weights' LR
        and decay, not in the 1-D (BN shift) group with its LR multiplier. None: it stays in that group."""
        return [self.whiten.bias] if self.whiten_bias_epochs is not None else []

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the trainer before each epoch (0-based): with ``whiten_bias_epochs`` N, the whitening bias
        trains for the first N epochs, then is frozen (airbench: 3); None: trained throughout."""
        if self.whiten_bias_epochs is not None:
            self.whiten.bias.requires_grad_(epoch < self.whiten_bias_epochs)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the whitening filters from normalised training images (N, 3, 32, 32); a few thousand suffice.

        A no-op with ``whiten="learned"``: that stem keeps its default init and is trained."""
        if not self.whiten_from_data:
            return
        filters = patch_whitening(images.float().cpu(), self.whiten.kernel_size[0])
        self.whiten.weight.copy_(filters.to(self.whiten.weight.device))
        self.whiten.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.whiten(x))
        x = self.pool(self.layers(x)).flatten(1)
        return self.head(x) * self.scale


@register("fast_net", "fast recipe net (airbench94-style): data-whitened 2x2 stem, 3 conv groups 64/256/256 (2.0M)")
def fast_net(num_classes: int = 10, widths: Sequence[int] = (64, 256, 256), whiten_kernel: int = 2,
             bn_momentum: float = 0.4, scale: float = 1 / 9, whiten: str = "data", dirac: bool = True,
             frozen_bn_scale: bool = True, whiten_bias_epochs: int | None = None) -> nn.Module:
    return FastNet(num_classes, widths, whiten_kernel, bn_momentum, scale, whiten, dirac, frozen_bn_scale,
                   whiten_bias_epochs)
