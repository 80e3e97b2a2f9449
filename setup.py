from setuptools import setup

# The scripts of scripts/ that are also console commands: fundus-build-dataset, fundus-train-ddpm, ...
COMMANDS = [
    "build_dataset",
    "demo",
    "evaluate",
    "evaluate_pm",
    "export_dataset",
    "generate",
    "judge_pm_labels",
    "post_hoc_ema",
    "split_dataset",
    "summarise_results",
    "train_dcgan",
    "train_ddpm",
]

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
        "fundus_diffusion.scripts",
    ],
    package_dir={
        "fundus_diffusion.pipelines": "pipelines",
        "fundus_diffusion.model_cards": "model_cards",
        "fundus_diffusion.scripts": "scripts",
    },
    package_data={"fundus_diffusion.model_cards": ["*.md"]},
    # Each script of scripts/ as a command on the PATH (a pip install has no scripts/ folder): `fundus-generate ...`
    # runs what `python scripts/generate.py ...` runs (scripts/__init__.py).
    entry_points={
        "console_scripts": [
            f"fundus-{name.replace('_', '-')} = fundus_diffusion.scripts:{name}_command" for name in COMMANDS
        ]
    },
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
