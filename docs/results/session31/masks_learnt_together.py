"""Whether a mask's held-out Dice depends on the masks scored beside it: evaluate() on phantoms (disc + atrophy) with
--masks disc against both masks, one segmenter seed, the real-trained segmenter's held-out disc Dice printed for each."""
from fundus_diffusion.data import load_phantom_dataset
from fundus_diffusion.evaluation import EvaluationConfig, evaluate

real = load_phantom_dataset(16, size=64, seed=0)
holdout = load_phantom_dataset(6, size=64, seed=1000, split="test")
synthetic = load_phantom_dataset(8, size=64, seed=2000)
for masks in ("disc", "disc,atrophy"):
    config = EvaluationConfig(masks=masks, resolution=32, seeds=1, segmenter_steps=60, realism_steps=1, realism_folds=2,
                              device="cpu", worst_images=0)
    report, _ = evaluate(real, synthetic, holdout, config)
    dice = {k: round(v["disc"]["dice"]["mean"], 3) for k, v in report["downstream"]["results"].items()}
    print(f"--masks {masks}: held-out disc Dice {dice}")
