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


CJK_FONTS = ["/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"]
# common Chinese characters (click captchas ask for these), plus letters and digits
HANZI = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属圆包火住调满县局照参红细引听该铁价严"


def cjk_fonts() -> list[str]:
    import os

    found = [f for f in CJK_FONTS if os.path.isfile(f)]
    if not found:
        raise RuntimeError("no CJK font found: apt-get install fonts-wqy-microhei")
    return found


def photo_backgrounds() -> list[np.ndarray]:
    """scikit-image's bundled sample photos as uint8 RGB (no download)."""
    import skimage.data as d

    out = []
    for name in ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                 "retina", "camera", "coins", "moon", "brick", "grass", "gravel", "colorwheel", "cat"]:
        im = getattr(d, name)()
        im = np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im[..., :3]
        out.append(im.astype(np.uint8))
    return out


def render_click_captchas(n: int, seed: int, size: int = 416) -> np.ndarray:
    """n click-captcha-like images [n, 3, size, size] as 0..255 BGR floats (ddddocr's detector input):
    3-6 Chinese characters or letters scattered, rotated and colored over a random crop of a photo."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    backgrounds = photo_backgrounds()
    cjk, latin = cjk_fonts(), fonts()
    out = []
    for _ in range(n):
        bg = backgrounds[rng.integers(len(backgrounds))]
        h, w = bg.shape[:2]
        ch, cw = int(h * rng.uniform(0.3, 1.0)), int(w * rng.uniform(0.3, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        im = Image.fromarray(bg[y:y + ch, x:x + cw]).resize((size, size), Image.BILINEAR).convert("RGBA")
        for _ in range(int(rng.integers(3, 7))):
            hanzi = rng.random() < 0.75
            text = str(rng.choice(list(HANZI if hanzi else ALPHABET)))
            path = (cjk if hanzi else latin)[rng.integers(len(cjk if hanzi else latin))]
            font = ImageFont.truetype(path, int(rng.integers(size // 14, size // 6)))
            tile = Image.new("RGBA", (font.size * 2, font.size * 2), (0, 0, 0, 0))
            color = tuple(int(c) for c in rng.integers(0, 256, 3)) + (255,)
            ImageDraw.Draw(tile).text((font.size // 2, font.size // 3), text, font=font, fill=color,
                                      stroke_width=int(rng.integers(0, 3)), stroke_fill=(255, 255, 255, 255))
            tile = tile.rotate(float(rng.uniform(-40, 40)), resample=Image.BILINEAR)
            im.alpha_composite(tile, (int(rng.integers(0, size - tile.width)), int(rng.integers(0, size - tile.height))))
        rgb = np.asarray(im.convert("RGB"), np.float32)
        out.append(rgb[..., ::-1].transpose(2, 0, 1))  # BGR, CHW
    return np.ascontiguousarray(np.stack(out))


def render_print_lines(n, seed, height=48, width=320):
    """Printed text lines as PaddleOCR's recognizers read them: one line cropped to its text,
    resized to `height` keeping its aspect, left-aligned in `width` columns padded with
    PaddleOCR's pad value (0 after its (x/255 - 0.5) / 0.5 normalization). Mixed Chinese phrases
    and Latin letters/digits, dark ink on light paper, mild blur and noise.
    Returns RGB [n, 3, height, width] normalized, and the texts."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    rng = np.random.default_rng(seed)
    latin, cjk = fonts(), cjk_fonts()
    out, texts = np.zeros((n, 3, height, width), np.float32), []
    for k in range(n):
        if rng.random() < 0.5:
            text = "".join(rng.choice(list(HANZI), rng.integers(2, 11)))
            if rng.random() < 0.3:
                text += "".join(rng.choice(list("0123456789"), rng.integers(1, 4)))
            path = cjk[rng.integers(len(cjk))]
        else:
            text = "".join(rng.choice(list(ALPHABET), rng.integers(3, 13)))
            path = (latin + cjk)[rng.integers(len(latin) + len(cjk))]
        font = ImageFont.truetype(path, int(rng.integers(28, 48)))
        probe = ImageDraw.Draw(Image.new("L", (8, 8)))
        l, t, r, b = probe.textbbox((0, 0), text, font=font)
        mx, my = int(rng.integers(2, 10)), int(rng.integers(2, 8))
        paper, ink = int(rng.integers(190, 256)), int(rng.integers(0, 90))
        im = Image.new("RGB", (r - l + 2 * mx, b - t + 2 * my), (paper,) * 3)
        tint = rng.integers(-15, 16, 3)
        ImageDraw.Draw(im).text((mx - l, my - t), text, fill=tuple(int(np.clip(ink + c, 0, 255)) for c in tint), font=font)
        if rng.random() < 0.3:
            im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 0.9))))
        w = min(width, max(8, int(np.ceil(height * im.width / im.height))))
        im = im.resize((w, height), Image.BILINEAR)
        a = np.asarray(im, np.float32) + rng.normal(0, rng.uniform(0, 5), (height, w, 3))
        a = (np.clip(a, 0, 255) / 255.0 - 0.5) / 0.5
        out[k, :, :, :w] = a.transpose(2, 0, 1)
        texts.append(text)
    return out, texts


def render_text_pages(n, seed, size=480):
    """Pages for a text detector (PP-OCR's DB): 4-12 horizontal lines of Chinese or Latin text at
    random places, sizes and colors, over a photo crop or plain paper. RGB normalized as PP-OCR's
    detector (x/255 - 0.5) / 0.5, [n, 3, size, size]."""
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(seed)
    backgrounds = photo_backgrounds()
    latin, cjk = fonts(), cjk_fonts()
    out = np.zeros((n, 3, size, size), np.float32)
    for k in range(n):
        if rng.random() < 0.5:
            bg = backgrounds[rng.integers(len(backgrounds))]
            h, w = bg.shape[:2]
            ch, cw = int(h * rng.uniform(0.3, 1.0)), int(w * rng.uniform(0.3, 1.0))
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            im = Image.fromarray(bg[y:y + ch, x:x + cw]).resize((size, size), Image.BILINEAR)
        else:
            im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(200, 256, 3)))
        draw = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(4, 13))):
            hanzi = rng.random() < 0.5
            text = "".join(rng.choice(list(HANZI if hanzi else ALPHABET), rng.integers(2, 12)))
            path = (cjk if hanzi else latin)[rng.integers(len(cjk if hanzi else latin))]
            font = ImageFont.truetype(path, int(rng.integers(14, 40)))
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            draw.text((int(rng.integers(0, size - 40)), int(rng.integers(0, size - 20))), text, font=font,
                      fill=color, stroke_width=int(rng.integers(0, 2)), stroke_fill=(255, 255, 255))
        out[k] = ((np.asarray(im, np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
    return out
