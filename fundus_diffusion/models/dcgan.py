"""DCGAN generator and discriminator for C-channel fundus tensors (RGB + one channel per mask) in [-1, 1].

Both networks are fully convolutional and mirror each other. The generator turns a ``[B, nz, 1, 1]`` latent into a
``seed x seed`` map with one transposed convolution, then upsamples by 2 or 3 per stage; the discriminator
downsamples by the same factors with strided convolutions and ends in a ``seed x seed`` convolution to one logit.
Every resolution of the form ``seed * 2^a * 3^b`` with ``seed <= 5`` is exact without interpolation: 64, 128 and 256
are ``4 * 2^k`` and the paper's 360 is ``5 * 3 * 3 * 2 * 2 * 2``.

A stage with stride ``s`` uses kernel ``2s`` so that every output pixel receives the same number of kernel taps (no
checkerboard from uneven overlap): ``k4 s2 p1`` and ``k6 s3 p2`` (plus ``output_padding=1`` when transposed).
"""

import math
from typing import List, Optional, Tuple

import torch

# Imported by name on purpose: diffusers' from_pretrained looks the base classes up in the component's module
# (model_index.json records "fundus_diffusion.models.dcgan") to find how to load it.
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

MAX_SEED_SIZE = 5


def upsampling_plan(resolution: int) -> Tuple[int, List[int]]:
    """``resolution`` -> ``(seed, factors)``, factors 2 or 3 from the smallest map up, largest factors of 2 last.

    >>> upsampling_plan(360)
    (5, [3, 3, 2, 2, 2])
    """
    plan = _factor(int(resolution))
    if plan is None:
        nearby = [r for r in range(max(resolution - 24, 2), resolution + 25) if _factor(r) is not None]
        closest = sorted(nearby, key=lambda r: (abs(r - resolution), r))[:2]
        raise ValueError(
            f"A DCGAN resolution must be seed * 2^a * 3^b with seed <= {MAX_SEED_SIZE} and at least one upsampling "
            f"stage (e.g. 64, 128, 256, 360); got {resolution}. Nearest: {' or '.join(map(str, sorted(closest)))}."
        )
    return plan


def _factor(resolution: int) -> Optional[Tuple[int, List[int]]]:
    size, factors = resolution, []
    while size > MAX_SEED_SIZE:
        factor = 2 if size % 2 == 0 else 3 if size % 3 == 0 else None
        if factor is None:
            return None
        size //= factor
        factors.append(factor)
    return (size, factors[::-1]) if factors else None


def _stage_padding(stride: int) -> Tuple[int, int]:
    """(padding, output_padding) making a ``kernel = 2 * stride`` (transposed) convolution scale exactly by ``stride``."""
    padding = math.ceil(stride / 2)
    return padding, 2 * padding - stride


def _channel_mults(num_stages: int, max_mult: int) -> List[int]:
    """Widths from the finest stage to the coarsest: 1, 2, 4, ... capped at ``max_mult``."""
    return [min(2**i, max_mult) for i in range(num_stages)]


def _xavier(conv: nn.Module) -> nn.Module:
    """The paper's initialisation (Xavier) for a convolution; BatchNorm keeps PyTorch's identity default."""
    nn.init.xavier_uniform_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class DCGANGenerator(ModelMixin, ConfigMixin):
    """Latent ``[B, nz]`` or ``[B, nz, 1, 1]`` (plus optional class ids) -> ``[B, out_channels, S, S]`` in [-1, 1].

    Args:
        sample_size: output resolution ``S`` (see ``upsampling_plan``).
        out_channels: ``C = 3 + number of masks`` (4: RGB + disc, 5: RGB + disc + atrophy).
        nz: latent dimension. ngf: width of the last hidden stage; coarser stages double it up to ``ngf * max_mult``.
        num_class_embeds: number of class ids (e.g. 3 = non-PM, PM, null) for a conditional generator; the class
            embedding (``class_embed_dim``) is concatenated to the latent. None: unconditional.
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 360,
        out_channels: int = 4,
        nz: int = 100,
        ngf: int = 32,
        max_mult: int = 8,
        num_class_embeds: Optional[int] = None,
        class_embed_dim: int = 32,
    ):
        super().__init__()
        seed, factors = upsampling_plan(sample_size)
        widths = [ngf * m for m in _channel_mults(len(factors), max_mult)][::-1]  # coarse -> fine
        self.class_embedding = nn.Embedding(num_class_embeds, class_embed_dim) if num_class_embeds else None
        in_channels = nz + (class_embed_dim if num_class_embeds else 0)
        layers = [
            _xavier(nn.ConvTranspose2d(in_channels, widths[0], seed, 1, 0, bias=False)),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        ]
        for i, factor in enumerate(factors):
            padding, output_padding = _stage_padding(factor)
            last = i == len(factors) - 1
            out = out_channels if last else widths[i + 1]
            layers.append(
                _xavier(nn.ConvTranspose2d(widths[i], out, 2 * factor, factor, padding, output_padding, bias=last))
            )
            layers += [nn.Tanh()] if last else [nn.BatchNorm2d(out), nn.ReLU(True)]
        self.net = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor, class_labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if latents.ndim == 2:
            latents = latents[:, :, None, None]
        if self.class_embedding is not None:
            if class_labels is None:
                raise ValueError("This generator is class-conditional: pass class_labels (a LongTensor [B]).")
            embedding = self.class_embedding(class_labels.to(latents.device)).to(latents.dtype)
            latents = torch.cat([latents, embedding[:, :, None, None]], dim=1)
        return self.net(latents)


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
