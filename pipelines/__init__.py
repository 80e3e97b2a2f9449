"""Pipelines, installed as ``fundus_diffusion.pipelines`` (see setup.py ``package_dir``)."""

if __name__ != "fundus_diffusion.pipelines":
    raise ImportError(
        "Import the pipelines as `fundus_diffusion.pipelines` (pip install -e . maps the top-level "
        "`pipelines/` folder there), not as a bare `pipelines` package."
    )
