"""UNet presets: self-attention sits at the feature-map sizes each preset's comment names (at 256 px input)."""

from fundus_diffusion.models.unet import build_unet


def attention_sizes(preset: str, resolution: int) -> list:
    """Feature-map sizes (px) of the down blocks that carry self-attention (a space-to-depth UNet's first level is
    its ``sample_size``)."""
    unet = build_unet(preset, resolution, in_channels=5, class_conditional=False)
    first = unet.config.sample_size
    return [first >> level for level, block in enumerate(unet.down_blocks) if hasattr(block, "attentions")]


def test_small256_attn32_adds_attention_at_32_px_and_keeps_the_rest_of_small256():
    assert attention_sizes("small256", 256) == [16]
    assert attention_sizes("small256_attn32", 256) == [32, 16]
    assert attention_sizes("small256_s2d", 256) == [16]
    small, attn32 = (build_unet(p, 256, 5, class_conditional=False) for p in ("small256", "small256_attn32"))
    assert small.config.block_out_channels == attn32.config.block_out_channels
    extra = sum(p.numel() for p in attn32.parameters()) - sum(p.numel() for p in small.parameters())
    assert 0 < extra < 0.05 * sum(p.numel() for p in small.parameters())  # attention layers only, no wider blocks
