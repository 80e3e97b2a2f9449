"""Model-card templates, installed as ``fundus_diffusion.model_cards``."""
