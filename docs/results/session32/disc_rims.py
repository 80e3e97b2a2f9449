"""The disc rims of two synthetic sets at 4x, nearest-neighbour: the space-to-depth UNet's samples (left two columns)
beside small256's (right two) from the same sample seeds, the same crops (session 32). Synthetic samples only.

    python docs/results/session32/disc_rims.py
"""

from pathlib import Path

from PIL import Image

RESULTS = Path(__file__).resolve().parents[1]
SETS = [
    RESULTS / "realism-256-session32" / "s2d-seed0-5000-ddpm100-fullsize.png",  # small256_s2d, seed 0, step 5,000
    RESULTS / "realism-256-session15" / "interp-5000-ddpm100-fullsize.png",  # small256 (the ours preset), same
]
CROPS = [(341, 70), (858, 70), (85, 320), (351, 320)]  # 64 px squares over four discs of the 4 x 2 sheets


def main():
    sheet = Image.new("RGB", (1024, 512))
    for column, path in enumerate(SETS):
        samples = Image.open(path).convert("RGB")
        for i, (x, y) in enumerate(CROPS):
            crop = samples.crop((x, y, x + 64, y + 64)).resize((256, 256), Image.NEAREST)
            sheet.paste(crop, (column * 512 + (i % 2) * 256, (i // 2) * 256))
    out = RESULTS / "realism-256-session32" / "disc_rims_s2d_left_small256_right_4x.png"
    sheet.save(out)
    print(out)


if __name__ == "__main__":
    main()
