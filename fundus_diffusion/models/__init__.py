from .dcgan import DCGANDiscriminator, DCGANGenerator
from .unet import UNET_PRESETS, build_unet

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "UNET_PRESETS", "build_unet"]
