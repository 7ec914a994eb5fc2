"""Unlabeled inputs for the real models, made here with no download: rendered text lines (Debian's
font packages, drawn with Pillow) and scikit-image's bundled photos.

Text lines imitate what a captcha/line recognizer reads: 4-7 random letters and digits in one of the
installed TrueType fonts, random size, position, ink and paper colors, a slight rotation and noise.
"""
from __future__ import annotations

import glob
import string

import numpy as np

ALPHABET = string.ascii_lowercase + string.ascii_uppercase + string.digits
FONT_GLOBS = ["/usr/share/fonts/truetype/dejavu/*.ttf", "/usr/share/fonts/truetype/liberation*/*.ttf",
              "/usr/share/fonts/truetype/freefont/*.ttf"]


def fonts() -> list[str]:
    found = sorted({f for g in FONT_GLOBS for f in glob.glob(g)})
    if not found:
        raise RuntimeError("no TrueType fonts found: apt-get install fonts-dejavu-core fonts-liberation")
    return found


def render_text_lines(n: int, seed: int, height: int = 64, width: int = 192,
                      alphabet: str = ALPHABET, lengths=(4, 7)) -> tuple[np.ndarray, list[str]]:
    """n grey images [n, 1, height, width] in [0, 1] (ddddocr's preprocessing: grey / 255) and their text."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    rng = np.random.default_rng(seed)
    paths = fonts()
    images, texts = [], []
    for _ in range(n):
        text = "".join(rng.choice(list(alphabet), rng.integers(lengths[0], lengths[1] + 1)))
        font = ImageFont.truetype(paths[rng.integers(len(paths))], int(rng.integers(int(height * 0.45), int(height * 0.75))))
        paper = int(rng.integers(170, 256))
        ink = int(rng.integers(0, max(1, paper - 120)))
        canvas = Image.new("L", (width * 2, height * 2), paper)
        draw = ImageDraw.Draw(canvas)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        scale = min(1.0, (width - 8) / max(tw, 1), (height - 6) / max(th, 1))
        if scale < 1.0:  # too long for the line: smaller font
            font = ImageFont.truetype(font.path, max(10, int(font.size * scale)))
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
            tw, th = right - left, bottom - top
        x = int(rng.integers(2, max(3, width - tw - 2))) - left
        y = int(rng.integers(1, max(2, height - th - 1))) - top
        draw.text((x + width // 2, y + height // 2), text, fill=ink, font=font)
        angle = float(rng.uniform(-4, 4))
        canvas = canvas.rotate(angle, resample=Image.BILINEAR, fillcolor=paper,
                               center=(width // 2 + width // 2, height // 2 + height // 2))
        im = canvas.crop((width // 2, height // 2, width // 2 + width, height // 2 + height))
        if rng.random() < 0.3:
            im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
        a = np.asarray(im, np.float32)
        a = a + rng.normal(0, rng.uniform(0, 8), a.shape)
        images.append(np.clip(a, 0, 255) / 255.0)
        texts.append(text)
    return np.stack(images)[:, None].astype(np.float32), texts
