from setuptools import setup

setup(
    name="fundus-diffusion",
    version="0.1.0",
    description="Generate retinal fundus photographs together with their segmentation masks (DDPM and DCGAN).",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=[
        "fundus_diffusion",
        "fundus_diffusion.data",
        "fundus_diffusion.models",
        "fundus_diffusion.training",
        "fundus_diffusion.evaluation",
        "fundus_diffusion.pipelines",
        "fundus_diffusion.model_cards",
    ],
    package_dir={"fundus_diffusion.pipelines": "pipelines", "fundus_diffusion.model_cards": "model_cards"},
    package_data={"fundus_diffusion.model_cards": ["*.md"]},
    install_requires=[
        "torch>=2.6",  # torch.load defaults to weights_only=True
        "diffusers>=0.42",  # from_pretrained(dtype=...): torch_dtype is deprecated from 0.42
        "huggingface-hub>=0.23",
        "safetensors>=0.4",
        "numpy>=1.24",
        "Pillow>=10",
        "Jinja2",
        "tqdm",
    ],
    extras_require={
        "train": ["accelerate>=1.16", "datasets>=2.19", "ema-pytorch>=0.5", "tensorboard", "openpyxl"],
        "eval": ["datasets>=2.19", "torchmetrics>=1.3", "scipy>=1.10", "matplotlib>=3.7"],
        # FID / KID need torch-fidelity, which needs a torchvision built for your torch, plus the Inception weights.
        "fid": ["torch-fidelity", "torchvision"],
        "dev": ["pytest>=7", "ruff>=0.4"],
    },
)
