from .dcgan import DCGANDiscriminator, DCGANGenerator
from .unet import UNET_PRESETS, build_unet, preset_space_to_depth

__all__ = ["DCGANDiscriminator", "DCGANGenerator", "UNET_PRESETS", "build_unet", "preset_space_to_depth"]
