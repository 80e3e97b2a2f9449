"""DCGAN discriminator for C-channel fundus tensors (RGB + one channel per mask) in [-1, 1], and the generator.

The generator (``DCGANGenerator``) and its resolution plan are defined in the self-contained module
``fundus_diffusion.pipelines.dcgan_generator``, which saved models carry so that they load without this package; they
are re-exported here. The discriminator mirrors the generator: it downsamples by the same factors with strided
convolutions (kernel ``2 * stride``) and ends in a ``seed x seed`` convolution to one logit.
"""

from typing import Optional

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..pipelines.dcgan_generator import (
    MAX_SEED_SIZE,
    DCGANGenerator,
    _channel_mults,
    _stage_padding,
    _xavier,
    upsampling_plan,
)

__all__ = ["MAX_SEED_SIZE", "DCGANDiscriminator", "DCGANGenerator", "upsampling_plan"]


class DCGANDiscriminator(ModelMixin, ConfigMixin):
    """``[B, in_channels, S, S]`` (plus optional class ids) -> one real/fake logit per sample, ``[B]``.

    Args:
        sample_size, in_channels: as the generator's ``sample_size`` and ``out_channels``.
        ndf: width of the first stage; later stages double it up to ``ndf * max_mult``.
        num_class_embeds: class-conditional via a projection head (Miyato & Koyama 2018): the logit gains
            ``<embed(y), sum_xy h>`` over the last feature map ``h``.
        spectral_norm: spectral normalisation on every convolution; it replaces BatchNorm (as in SN-GAN), whose
            batch statistics would undo the Lipschitz bound.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 360,
        in_channels: int = 4,
        ndf: int = 64,
        max_mult: int = 8,
        num_class_embeds: Optional[int] = None,
        spectral_norm: bool = False,
    ):
        super().__init__()
        seed, factors = upsampling_plan(sample_size)
        widths = [ndf * m for m in _channel_mults(len(factors), max_mult)]  # fine -> coarse
        sn = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        layers, channels = [], in_channels
        for i, factor in enumerate(factors[::-1]):
            padding, _ = _stage_padding(factor)
            use_bn = i > 0 and not spectral_norm  # DCGAN: no BatchNorm on the input layer
            layers.append(sn(_xavier(nn.Conv2d(channels, widths[i], 2 * factor, factor, padding, bias=not use_bn))))
            if use_bn:
                layers.append(nn.BatchNorm2d(widths[i]))
            layers.append(nn.LeakyReLU(0.2, True))
            channels = widths[i]
        self.features = nn.Sequential(*layers)
        self.head = sn(_xavier(nn.Conv2d(channels, 1, seed, 1, 0)))
        self.class_embedding = nn.Embedding(num_class_embeds, channels) if num_class_embeds else None
        if self.class_embedding is not None:
            nn.init.zeros_(self.class_embedding.weight)  # start as the unconditional discriminator

    def forward(self, sample: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        h = self.features(sample)
        logits = self.head(h).flatten()
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("This discriminator is class-conditional: pass class_labels (a LongTensor [B]).")
            projection = (self.class_embedding(class_labels.to(sample.device)) * h.sum(dim=(2, 3))).sum(dim=1)
            logits = logits + projection.to(logits.dtype)
        return logits
