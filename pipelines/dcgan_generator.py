"""DCGANGenerator: the generator of ``FundusGANPipeline``, in a module of its own that imports only torch, diffusers
and the standard library, and nothing relatively: a saved folder carries it as ``gan_generator/dcgan_generator.py``
(named in ``model_index.json``), the only file diffusers downloads from a component's folder on the Hub.

The generator is fully convolutional. It turns a ``[B, nz, 1, 1]`` latent into a ``seed x seed`` map with one
transposed convolution, then upsamples by 2 or 3 per stage. Every resolution of the form ``seed * 2^a * 3^b`` with
``seed <= 5`` is exact without interpolation: 64, 128 and 256 are ``4 * 2^k`` and the paper's 360 is
``5 * 3 * 3 * 2 * 2 * 2``. A stage with stride ``s`` uses kernel ``2s`` so that every output pixel receives the same
number of kernel taps (no checkerboard from uneven overlap): ``k4 s2 p1`` and ``k6 s3 p2`` (plus
``output_padding=1``).
"""

import math
from typing import List, Optional, Tuple

import torch

# ModelMixin and ConfigMixin are imported by name on purpose: diffusers looks a component's base classes up in the
# module that defines it to find how to save and load it.
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
