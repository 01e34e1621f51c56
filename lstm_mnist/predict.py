"""Your own digit, read the way MNIST's were made, and what the trained network says about it.

MNIST's digits were scanned on paper, then normalised (LeCun et al., 1998):
the digit's bounding box was scaled to fit a 20x20 box, keeping its aspect
ratio, with anti-aliasing (hence the grey edges), and the result was placed in
a 28x28 field so that its centre of mass sits at the centre; white ink on
black. A network trained on those digits expects the same of yours: a 7 drawn
black on white across a whole 500x500 canvas looks nothing like an MNIST 7
until it goes through the same steps, which `read_picture` takes (`ink_on_black`,
then `mnist_style`):

    any picture (PNG, JPEG, ... any size, colour or greyscale, with or without transparency)
      -> greyscale; transparent parts count as paper
      -> white ink on black: a picture whose border is light (dark on light, like ink on
         paper) is inverted; the paper becomes 0 and the strongest ink 1
      -> cropped to the digit's bounding box, scaled (anti-aliased) to fit 20x20, aspect kept
      -> placed in a 28x28 field with its centre of mass at the centre     float32 [28, 28] in [0, 1]

`.npy` files are taken as they are (already 28x28, see saved.preprocess).
Every file is untrusted input: a path that is not a regular file, an empty,
truncated or huge file, or a picture that is not a digit ends in one line.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lstm_mnist.config import FEATURES, NUM_CLASSES, TIMESTEPS
from lstm_mnist.errors import plain_reason
from lstm_mnist.saved import ImageError, preprocess, short_reason

BOX = 20  # MNIST's digits were scaled to fit a 20x20 box inside the 28x28 field
# Where MNIST's centres of mass sit: measured on the 10,000 test digits, the mean is at row 13.99 and
# column 14.01 (pixel indices), and 99.99% are within half a pixel of (14, 14).
CENTRE_ROW, CENTRE_COLUMN = TIMESTEPS / 2, FEATURES / 2
# A digit needs no more; these refuse a decompression bomb or a 2 GB file before it is decoded.
MAX_PIXELS = 64_000_000
MAX_FILE_BYTES = 128 << 20  # room for a photo, or a .npy of 160,000 digits
NPY_SUFFIX = ".npy"


class Digit(NamedTuple):
    """One image to classify: where it came from, and the image, float32 [28, 28] in [0, 1]."""

    name: str
    image: np.ndarray


# ---------------------------------------------------------------------------
# From a picture to an MNIST-style digit
# ---------------------------------------------------------------------------


def ink_on_black(grey: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
    """A greyscale picture -> the ink: float32 [H, W], 0 where the paper is, 1 for the strongest ink.

    grey: float [H, W] on any scale (8-bit, 16-bit, ...); alpha: float [H, W]
    in [0, 1] or None. The paper's colour is the median of the picture's
    outermost pixels: a light border means dark ink on light paper, which is
    inverted. Faint noise of the paper (four times its median deviation along
    the border) is set to 0. Raises ImageError for a picture with no ink, or with NaN or infinite pixels.
    """
    grey = grey.astype(np.float64)
    if not np.isfinite(grey).all():  # a floating-point TIFF can hold them; min() and max() would then be NaN
        raise ImageError("some pixels are not numbers (NaN or infinite); save the picture with finite values")
    low, high = float(grey.min()), float(grey.max())
    if not high - low > 0.02 * max(abs(low), abs(high), 1e-12):
        raise ImageError("it is blank: every pixel has (nearly) the same value, so there is no digit in it")
    grey = (grey - low) / (high - low)  # (H, W), 0..1 whatever the file's scale
    if alpha is not None and alpha.min() < alpha.max():
        # Transparent pixels are paper: composite onto the paper colour that contrasts with the strokes.
        strokes = float((grey * alpha).sum() / alpha.sum())
        paper = 1.0 if strokes < 0.5 else 0.0
        grey = grey * alpha + paper * (1.0 - alpha)
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    paper = float(np.median(border))
    if paper > 0.5:  # dark ink on light paper: invert, as MNIST is white on black
        grey, border, paper = 1.0 - grey, 1.0 - border, 1.0 - paper
    strongest = float(grey.max())
    if strongest - paper < 0.1:
        raise ImageError(f"no digit found: the darkest and lightest marks differ from the paper by only "
                         f"{strongest - paper:.0%}")
    ink = np.clip((grey - paper) / (strongest - paper), 0.0, 1.0)  # paper 0, the strongest ink 1
    noise = 4.0 * float(np.median(np.abs(border - paper))) / (strongest - paper)
    ink[ink <= noise] = 0.0
    if not ink.any():
        raise ImageError("no digit found: nothing stands out from the paper")
    return ink.astype(np.float32)


def mnist_style(ink: np.ndarray) -> np.ndarray:
    """The ink of a picture, float [H, W] with the paper at 0 -> float32 [28, 28] as MNIST's digits were made.

    The bounding box of the ink is scaled to fit 20x20 (aspect ratio kept,
    anti-aliased by Pillow's Lanczos filter; not resampled if it already
    fits exactly) and placed with its centre of mass at the centre of the
    28x28 field. An MNIST digit given back to it comes out as it went in: of the
    10,000 test digits, 9,997 come back within 1/255 of every pixel (the other
    three move by a pixel, their boxes being 19 pixels high).
    """
    from PIL import Image

    rows, columns = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    digit = ink[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]  # (h, w), the bounding box
    height, width = digit.shape
    scale = BOX / max(height, width)
    if scale != 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))  # Pillow says (width, height)
        resized = Image.fromarray(digit.astype(np.float32)).resize(size, Image.Resampling.LANCZOS)
        digit = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)  # Lanczos rings a little past 0..1
        height, width = digit.shape
    total = float(digit.sum())
    centre_row = float((digit.sum(axis=1) * np.arange(height)).sum()) / total  # centre of mass, in the box
    centre_column = float((digit.sum(axis=0) * np.arange(width)).sum()) / total
    top = int(np.clip(np.floor(CENTRE_ROW - centre_row + 0.5), 0, TIMESTEPS - height))
    left = int(np.clip(np.floor(CENTRE_COLUMN - centre_column + 0.5), 0, FEATURES - width))
    field = np.zeros((TIMESTEPS, FEATURES), np.float32)
    field[top:top + height, left:left + width] = digit  # (h, w) -> its place in (28, 28)
    return field


# ---------------------------------------------------------------------------
# Files: pictures and .npy arrays, read as untrusted input
# ---------------------------------------------------------------------------


def check_input_file(path: Path) -> None:
    """ImageError unless `path` is a regular, non-empty file of a sane size (symbolic links are followed)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except OSError as error:  # a symbolic-link loop (ELOOP), a permission, a name too long...
        raise ImageError(f"{path}: cannot read it ({plain_reason(error)})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(f"{path} is a folder; pass image files (PNG, JPEG, ...) or .npy arrays")
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(f"{path} is not a regular file (a pipe or a device?); pass an image file")
    if info.st_size == 0:
        raise ImageError(f"{path} is empty (0 bytes)")
    if info.st_size > MAX_FILE_BYTES:
        raise ImageError(f"{path} is {info.st_size / 2**20:,.0f} MiB; a digit needs far less "
                         f"(the limit is {MAX_FILE_BYTES >> 20} MiB)")


def read_picture(path: Path) -> np.ndarray:
    """A picture file of a digit -> float32 [28, 28] in [0, 1], MNIST-style; ImageError (one line) if it cannot be."""
    from PIL import Image, ImageOps

    check_input_file(path)
    try:
        with warnings.catch_warnings(), Image.open(path) as picture:
            # Pillow warns from 89 megapixels on; ours refuses from MAX_PIXELS, in one line.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            width, height = picture.size
            if width * height > MAX_PIXELS:  # checked on the header, before anything is decoded
                raise ImageError(f"{path} is {width:,}x{height:,} pixels, far more than a digit needs "
                                 f"(the limit is {MAX_PIXELS // 1_000_000} megapixels): scale it down first")
            picture = ImageOps.exif_transpose(picture)  # a phone photo stored sideways, turned upright
            if "A" in picture.getbands() or "transparency" in picture.info:
                rgba = picture.convert("RGBA")
                alpha = np.asarray(rgba.getchannel("A"), np.float32) / 255.0  # (H, W)
                grey = np.asarray(rgba.convert("L"), np.float32)  # (H, W) 0..255
            else:
                alpha = None
                grey = np.asarray(picture.convert("F"), np.float32)  # (H, W), 8 or 16 bits alike
    except ImageError:
        raise
    except Image.DecompressionBombError:  # Pillow's own guard: over 179 megapixels, refused while opening
        raise ImageError(f"{path} has far more pixels than a digit needs (the limit is "
                         f"{MAX_PIXELS // 1_000_000} megapixels): scale it down first") from None
    except Exception as error:  # Pillow's decoders fail in many ways on a damaged file: OSError, SyntaxError, ...
        kind = "not an image Pillow can read (PNG, JPEG, GIF, BMP, TIFF, WebP, ...)" \
            if type(error).__name__ == "UnidentifiedImageError" else f"a damaged image ({short_reason(error)})"
        raise ImageError(f"{path}: {kind}") from None
    try:
        return mnist_style(ink_on_black(grey, alpha))
    except ImageError as error:
        raise ImageError(f"{path}: {error}") from None


def read_npy(path: Path) -> list[Digit]:
    """A .npy file of one image [28, 28] or N images [N, 28, 28] (named file.npy[i]); saved.preprocess's rules."""
    check_input_file(path)
    try:
        # Memory-mapped: a header claiming more than the file holds is refused before anything is allocated.
        # allow_pickle=False: a pickled object array is refused, never run.
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ImageError(f"{path}: cannot read it as a .npy array ({short_reason(error)})") from None
    if not isinstance(array, np.ndarray):
        raise ImageError(f"{path}: holds several arrays (an .npz?); save one array with numpy.save")
    try:
        images = preprocess(array)  # (N, 28, 28)
    except ImageError as error:
        raise ImageError(f"{path}: {error}") from None
    except MemoryError:
        raise ImageError(f"{path}: its {array.shape} images do not fit in memory; predict on fewer") from None
    if array.ndim == 2:
        return [Digit(str(path), images[0])]
    return [Digit(f"{path}[{index}]", image) for index, image in enumerate(images)]


def read_digits(paths: list[Path]) -> list[Digit]:
    """Every image in `paths`: one per picture, N per .npy file of [N, 28, 28]."""
    digits = []
    for path in paths:
        if path.suffix.lower() == NPY_SUFFIX:
            digits += read_npy(path)
        else:
            digits.append(Digit(str(path), read_picture(path)))
    return digits


# ---------------------------------------------------------------------------
# What the network says
# ---------------------------------------------------------------------------


def probabilities(model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities (softmax of the model's logits): float32 [N, T, F] -> float32 [N, 10].

    images: cut as the run reads them (saved.as_read_by); [N, 28, 28] by default.
    """
    import keras

    batches = [keras.ops.softmax(model(images[start:start + batch_size], training=False))  # (b, 10)
               for start in range(0, len(images), batch_size)]
    return np.concatenate([keras.ops.convert_to_numpy(batch) for batch in batches])


def explain_figure(digits: list[Digit], by_row: np.ndarray) -> np.ndarray:
    """Each digit as the network saw it, beside its probabilities after each row; RGB uint8 [height, width, 3].

    by_row: float [N, 28, 10] from reading.probabilities_after_each_line (one answer per image row):
    by_row[n, t, d] = P(digit d | rows 0..t of image n). Image row t and
    probability row t are drawn at the same height, so one can see which
    stroke made the network change its mind; the white line marks the row
    from which the answer no longer changes.
    """
    from matplotlib.figure import Figure

    from lstm_mnist.figures import to_rgb_array
    from lstm_mnist.reading import settled_row

    count = len(digits)
    figure = Figure(figsize=(6.4, 3.1 * count), dpi=100)
    axes_grid = figure.subplots(count, 2, squeeze=False, gridspec_kw={"width_ratios": [TIMESTEPS, 2 * NUM_CLASSES]})
    row_ticks = list(range(0, TIMESTEPS, 4)) + [TIMESTEPS - 1]
    for (digit_axes, heat_axes), digit, probabilities_by_row in zip(axes_grid, digits, by_row):
        answer = int(np.argmax(probabilities_by_row[-1]))
        settled = settled_row(probabilities_by_row)
        digit_axes.imshow(digit.image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        digit_axes.set_title(f"{Path(digit.name).name if '[' not in digit.name else digit.name}\n"
                             "as the network sees it", fontsize=8)
        digit_axes.set_xticks([])
        digit_axes.set_yticks(row_ticks)
        digit_axes.set_ylabel("row t (timestep)", fontsize=8)
        heat = heat_axes.imshow(probabilities_by_row, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto",
                                interpolation="nearest")  # (28 rows, 10 digits)
        heat_axes.axhline(settled - 0.5, color="white", linewidth=1.5)
        heat_axes.set_xticks(range(NUM_CLASSES))
        heat_axes.set_yticks(row_ticks)
        heat_axes.set_xlabel("digit", fontsize=8)
        heat_axes.set_title(f"P(digit | rows 0..t): says {answer} ({probabilities_by_row[-1, answer]:.0%}),\n"
                            f"settled from row {settled} on (white line)", fontsize=8)
        heat_axes.tick_params(labelsize=7)
        digit_axes.tick_params(labelsize=7)
        figure.colorbar(heat, ax=heat_axes, fraction=0.08, pad=0.03).ax.tick_params(labelsize=7)
    figure.tight_layout()
    return to_rgb_array(figure)


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 [height, width, 3] -> the bytes of a PNG file."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
