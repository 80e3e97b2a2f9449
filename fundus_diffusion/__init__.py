"""fundus-diffusion: synthetic retinal fundus photographs together with their segmentation masks."""

from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = [
    "FundusPipeline", "FundusGANPipeline", "FundusPipelineOutput", "DCGANGenerator", "DCGANDiscriminator", "frame_pair"
]  # fmt: skip

if TYPE_CHECKING:  # pragma: no cover
    from .data.transforms import frame_pair
    from .models.dcgan import DCGANDiscriminator, DCGANGenerator
    from .pipelines.pipeline_fundus import FundusPipeline, FundusPipelineOutput
    from .pipelines.pipeline_fundus_gan import FundusGANPipeline


def __getattr__(name):
    # Lazy, so that `import fundus_diffusion.data` does not pay for diffusers' import.
    if name in ("FundusPipeline", "FundusPipelineOutput"):
        from .pipelines import pipeline_fundus

        return getattr(pipeline_fundus, name)
    if name == "FundusGANPipeline":
        from .pipelines.pipeline_fundus_gan import FundusGANPipeline

        return FundusGANPipeline
    if name in ("DCGANGenerator", "DCGANDiscriminator"):
        from .models import dcgan

        return getattr(dcgan, name)
    if name == "frame_pair":
        from .data.transforms import frame_pair

        return frame_pair
    raise AttributeError(f"module 'fundus_diffusion' has no attribute {name!r}")
