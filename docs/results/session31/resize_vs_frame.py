"""Held-out disc masks of fundus-od at 32 px: a plain nearest-neighbour resize of the whole mask against the mask framed
as training frames it (frame_pair); Dice between the two, mean and minimum over the held-out ids."""
import glob, os, sys
import numpy as np
from PIL import Image
from fundus_diffusion import frame_pair

data, ids_file, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
ids = [line.strip().rsplit("/", 1)[-1] for line in open(ids_file) if line.strip() and not line.startswith("#")]
dice = []
for i in ids:
    image = Image.open(glob.glob(os.path.join(data, "images", i + ".*"))[0])
    mask = Image.open(glob.glob(os.path.join(data, "masks", "disc", i + ".*"))[0]).convert("L")
    resized = np.asarray(mask.resize((size, size), Image.NEAREST)) >= 128
    framed = np.asarray(frame_pair(image, {"disc": mask}, size)[1]["disc"]) >= 128
    dice.append(2 * (resized & framed).sum() / (resized.sum() + framed.sum()))
print(f"{len(dice)} held-out discs at {size} px: Dice(resized, framed) mean {np.mean(dice):.3f}, min {np.min(dice):.3f}")
