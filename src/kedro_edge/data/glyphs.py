"""The bundled default task: letters rendered from the fonts matplotlib ships (notMNIST-like).

Ten classes, A to J, each drawn upper- or lower-case in one of ~20 TrueType faces (DejaVu
Sans/Serif/Mono, STIX, Computer Modern) with a random affine warp, stroke weight, clutter,
blur, contrast and noise, at 32x32. Nothing is downloaded: the fonts are files inside the
installed matplotlib package. A good CNN gets most of it right but not all (the point:
accuracy figures that can move, so gates and comparisons can tell models apart).

Every image is drawn from its own generator seeded by ``(seed, index)``, so a data set is
the same bytes on every machine with the same matplotlib/Pillow fonts, whatever the order
or chunking of the work.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CLASSES = "ABCDEFGHIJ"

# Text faces among matplotlib's bundled fonts (symbol and display-subset fonts left out).
FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmb10.ttf",
    "cmss10.ttf",
    "cmti10.ttf",
    "cmtt10.ttf",
)

_CANVAS = 64  # drawn at twice the output size, then downsampled (anti-aliased strokes)


@dataclass(frozen=True)
class GlyphSpec:
    """What defines a generated data set; the file records it so a changed spec regenerates."""

    n_per_class: int = 2000
    size: int = 32
    seed: int = 0
    severity: float = 1.0  # scales every distortion; 0 gives clean centred glyphs

    def to_json(self) -> dict:
        return {"generator": "kedro_edge.data.glyphs", "classes": CLASSES, **asdict(self)}


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


@functools.lru_cache(maxsize=512)
def _font(name: str, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(font_dir() / name), size=size)


def _affine(rng: np.random.Generator, severity: float) -> tuple[float, ...]:
    """Inverse affine map (output -> input pixel) about the canvas centre: rotate, shear, scale, shift."""
    angle = np.deg2rad(rng.uniform(-18, 18) * severity)
    shear = rng.uniform(-0.3, 0.3) * severity
    scale = np.exp(rng.uniform(-0.25, 0.12) * severity)
    shift = rng.uniform(-6, 6, size=2) * severity
    cos, sin = np.cos(angle), np.sin(angle)
    forward = np.array([[cos, -sin + shear], [sin, cos]]) * scale
    inv = np.linalg.inv(forward)
    c = _CANVAS / 2
    offset = np.array([c, c]) - inv @ (np.array([c, c]) + shift)
    return (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])


def _clutter(draw, rng: np.random.Generator, severity: float) -> None:
    """Strokes that are not the letter: lines and arcs, dimmer or as bright as the glyph."""
    for _ in range(rng.poisson(1.5 * severity)):
        x0, y0, x1, y1 = rng.uniform(0, _CANVAS, size=4)
        fill = int(rng.uniform(90, 255))
        width = int(rng.integers(1, 4))
        if rng.random() < 0.5:
            draw.line((x0, y0, x1, y1), fill=fill, width=width)
        else:
            box = (min(x0, x1), min(y0, y1), max(x0, x1) + 8, max(y0, y1) + 8)
            start = rng.uniform(0, 360)
            draw.arc(box, start, start + rng.uniform(40, 200), fill=fill, width=width)


def render(index: int, label: int, spec: GlyphSpec) -> np.ndarray:
    """One (size, size) uint8 image of class ``label``, determined by ``(spec.seed, index)``."""
    return render_with_mask(index, label, spec)[0]


def render_with_mask(index: int, label: int, spec: GlyphSpec) -> tuple[np.ndarray, np.ndarray]:
    """The image of ``render`` and its (size, size) uint8 mask: ``label + 1`` on the letter's
    strokes (drawn and warped as in the image, without clutter, blur or noise), 0 elsewhere."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng([spec.seed, index])
    sev = spec.severity
    char = CLASSES[label] if rng.random() < 0.5 else CLASSES[label].lower()
    font = _font(FONT_FILES[rng.integers(len(FONT_FILES))], int(rng.integers(34, 46)))
    img = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(img)
    stroke = int(rng.integers(0, 3)) if rng.random() < 0.5 * sev else 0
    draw.text(
        (_CANVAS / 2, _CANVAS / 2),
        char,
        fill=255,
        font=font,
        anchor="mm",
        stroke_width=stroke,
        stroke_fill=255,
    )
    glyph = img.copy()
    if sev > 0:
        warp = _affine(rng, sev)
        img = img.transform(img.size, Image.Transform.AFFINE, warp, resample=Image.Resampling.BILINEAR)
        glyph = img.copy()
        _clutter(ImageDraw.Draw(img), rng, sev)
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.6) * sev))
    img = img.resize((spec.size, spec.size), Image.Resampling.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0
    background, foreground = rng.uniform(0, 0.35 * sev), rng.uniform(1 - 0.35 * sev, 1.0)
    x = background + (foreground - background) * x
    x = x + rng.normal(0, rng.uniform(0, 0.12) * sev, size=x.shape)
    strokes = np.asarray(glyph.resize((spec.size, spec.size), Image.Resampling.BILINEAR)) >= 128
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8), (strokes * (label + 1)).astype(np.uint8)


def generate(
    spec: GlyphSpec, progress: Callable[[range], Iterable[int]] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N, size, size) uint8, labels (N,) int64)``, classes interleaved.

    ``progress`` wraps the index range (e.g. a rich ``track``) for long runs.
    """
    images, _, labels = _generate(spec, progress, masks=False)
    return images, labels


def generate_masks(
    spec: GlyphSpec, progress: Callable[[range], Iterable[int]] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(images, masks (N, size, size) uint8, labels)``: the images of ``generate`` and, per
    pixel, 0 for background or ``label + 1`` on the letter (the segmentation task's targets)."""
    images, masks, labels = _generate(spec, progress, masks=True)
    assert masks is not None
    return images, masks, labels


def _generate(
    spec: GlyphSpec, progress: Callable[[range], Iterable[int]] | None, masks: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    n = spec.n_per_class * len(CLASSES)
    labels = np.arange(n, dtype=np.int64) % len(CLASSES)
    images = np.empty((n, spec.size, spec.size), dtype=np.uint8)
    out = np.empty_like(images) if masks else None
    for i in progress(range(n)) if progress else range(n):
        images[i], mask = render_with_mask(i, int(labels[i]), spec)
        if out is not None:
            out[i] = mask
    return images, out, labels
