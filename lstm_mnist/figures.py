"""The pictures in TensorBoard's IMAGES tab, drawn pixel by pixel with Pillow.

Each function takes plain NumPy arrays and returns one RGB image,
uint8 [height, width, 3], ready for `tf.summary.image`:

    sequences_as_pictures         what the network reads, laid out again as 28 x 28 pictures
    sample_inputs_figure          the digits as the network reads them, cut into its timesteps
    confusion_matrix_figure       true digit (rows) against predicted digit (columns)
    misclassified_figure          the validation digits the network gets wrong, with both labels
    reading_row_by_row_figure     P(digit | rows 0..t) for every t, next to the image it reads

Every picture is WIDTH pixels wide, the width at which TensorBoard shows an
image unless "Show actual image size" is ticked, so it is shown pixel for
pixel: nothing is shrunk or stretched, and every number stays legible. Each
pixel of a digit is a small square of screen pixels, and each row of the
image (one timestep) keeps its place, so rows can be counted on the axis.

Why Pillow and not matplotlib: drawn with matplotlib (most of the time goes
into creating tick objects and laying out text), the three per-epoch
pictures cost 239-357 ms per epoch, PNG encoding and writing included; drawn
here, 32-54 ms (both versions timed side by side, 20 rounds each, on 2 busy
CPU cores). The 0.2-0.3 s saved is about 2% of a default epoch on 2 CPU cores.
"""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import colormaps
from PIL import Image, ImageDraw, ImageFont

from lstm_mnist.config import FEATURES, NUM_CLASSES, TIMESTEPS

WIDTH = 350  # TensorBoard's IMAGES tab shows an image this wide by default
BLACK, WHITE, GREY = (0, 0, 0), (255, 255, 255), (200, 200, 200)
DARK_RED = (170, 20, 20)  # a wrong answer
BOUNDARY = (110, 155, 235)  # the line between two timesteps
SCALE = 3  # screen pixels per image pixel, for the digits read row by row


def sequences_as_pictures(sequences: np.ndarray) -> np.ndarray:
    """[N, T, F] -> [N, 28, 28]: each sequence laid out again in lines of 28 values, in the order it is read.

    For the pictures of TensorBoard's IMAGES tab. Without --permute-pixels this
    is the digit itself, whatever the pixels per step; with it, the scrambled
    picture that the network actually reads.
    """
    return np.asarray(sequences).reshape(len(sequences), TIMESTEPS, FEATURES)  # (N, T, F) -> (N, 784) -> (N, 28, 28)


@functools.lru_cache(maxsize=None)
def font(size: int) -> ImageFont.FreeTypeFont:
    """DejaVu Sans, the font matplotlib ships with, `size` pixels high."""
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)


def write(draw: ImageDraw.ImageDraw, xy, text: str, size: int = 10, anchor: str = "la", fill=BLACK) -> None:
    """One line of text; anchor as in Pillow: "la" left/top, "ma" centred/top, "rm" right/middle, "mm" centred."""
    draw.text(xy, text, fill=fill, font=font(size), anchor=anchor)


def write_upwards(picture: Image.Image, centre, text: str, size: int = 10) -> None:
    """One line of text turned to read from bottom to top (a y-axis label), centred on `centre`."""
    left, top, right, bottom = font(size).getbbox(text)
    label = Image.new("RGB", (right + 2, bottom + 2), WHITE)
    ImageDraw.Draw(label).text((1, 0), text, fill=BLACK, font=font(size))
    label = label.rotate(90, expand=True)
    picture.paste(label, (int(centre[0] - label.width / 2), int(centre[1] - label.height / 2)))


def to_rgb_array(figure) -> np.ndarray:
    """Render a matplotlib `Figure` (a picture drawn elsewhere, e.g. predict.py's --explain), uint8 [H, W, 3]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()  # (H, W, 4) RGBA -> (H, W, 3) RGB


def framed(picture: Image.Image) -> np.ndarray:
    """The finished picture as uint8 [height, WIDTH, 3]: centred on white, so that TensorBoard, which fits an
    image to WIDTH, shows it pixel for pixel instead of stretching it."""
    pixels = np.asarray(picture)
    margin = max(WIDTH - pixels.shape[1], 0)
    return np.pad(pixels, ((0, 0), (margin // 2, margin - margin // 2), (0, 0)), constant_values=255)


def digit_pixels(image: np.ndarray, scale: int) -> np.ndarray:
    """One image, [rows, columns] as MNIST stores it (white ink on black; uint8 0..255 or float 0..1),
    as black ink on white paper, each pixel a scale x scale square: uint8 [rows*scale, columns*scale, 3]."""
    ink = np.asarray(image, dtype=np.float32)
    if np.issubdtype(np.asarray(image).dtype, np.integer):
        ink = ink / 255.0
    grey = np.round(255.0 * (1.0 - np.clip(ink, 0.0, 1.0))).astype(np.uint8)  # (rows, columns)
    big = np.repeat(np.repeat(grey, scale, axis=0), scale, axis=1)  # (rows*scale, columns*scale)
    return np.repeat(big[..., np.newaxis], 3, axis=2)  # (..., 3)


def row_ticks(rows: int) -> list[int]:
    """The rows to number on an axis: 0, 7, 14, 21 and the last (27), for 28 rows."""
    step = max(1, round(rows / 4))
    ticks = list(range(0, rows, step))
    if rows - 1 - ticks[-1] < step / 2:
        ticks[-1] = rows - 1  # too close to the last row to number both
    else:
        ticks.append(rows - 1)
    return ticks


def row_axis(draw: ImageDraw.ImageDraw, right: int, top: int, rows: int, row_height: int) -> None:
    """Row numbers, right-aligned at x = right, each level with the middle of its row."""
    for row in row_ticks(rows):
        write(draw, (right, top + row * row_height + row_height // 2), str(row), size=9, anchor="rm")


def sample_inputs_figure(images: np.ndarray, labels: np.ndarray, pixels_per_step: int = FEATURES,
                         columns: int = 3) -> np.ndarray:
    """Digits cut into their timesteps, as the network reads them.

    images: [N, 28, 28] (uint8 or float in [0, 1]), each sequence laid out in
    lines of 28 pixels in the order it is read (sequences_as_pictures);
    labels: int [N]; pixels_per_step: K, the pixels of one timestep. With the
    default K = 28, row t of the image is the input at timestep t: a blue
    line separates consecutive rows, which are numbered on the left. With
    another K, a blue line marks where a timestep starts: across the picture
    where one starts with a line, a short mark inside a line where one starts
    there (for K >= 4; closer marks would hide the digit).
    """
    count, rows, width = images.shape[:3]
    row_step = SCALE + 1  # each row of pixels, then the 1-pixel line to the next row
    cell_width, cell_height = width * SCALE, rows * row_step - 1
    axis, gap, title, header = 24, 16, 14, 30
    lines = -(-count // columns)  # ceil
    line_height = title + cell_height + 8
    canvas = np.full((header + lines * line_height, axis + columns * (cell_width + gap) - gap, 3), 255, np.uint8)
    # Where each of the rows*SCALE pixel rows of a scaled digit goes in its cell, and the line under each row:
    destination = (np.arange(rows * SCALE) // SCALE) * row_step + np.arange(rows * SCALE) % SCALE
    under_row = np.arange(rows - 1) * row_step + SCALE  # (rows - 1,)
    # The (row, column) of the first pixel of every timestep after the first.
    starts_row, starts_column = np.divmod(np.arange(pixels_per_step, rows * width, pixels_per_step), width)
    new_line = starts_column == 0
    cells = []
    for index, image in enumerate(images):
        top = header + (index // columns) * line_height + title
        left = axis + (index % columns) * (cell_width + gap)
        cell = np.full((cell_height, cell_width, 3), 255, np.uint8)
        cell[destination] = digit_pixels(image, SCALE)
        cell[under_row[starts_row[new_line] - 1]] = BOUNDARY  # a timestep starts with the next row
        if pixels_per_step >= 4:
            for row, column in zip(starts_row[~new_line], starts_column[~new_line]):  # one starts inside a row
                cell[row * row_step:row * row_step + SCALE, column * SCALE] = BOUNDARY
        canvas[top:top + cell_height, left:left + cell_width] = cell
        cells.append((top, left))
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    if pixels_per_step == width:
        write(draw, (0, 0), "row t of each image is the input at timestep t;")
        write(draw, (0, 14), "the blue lines separate the timesteps")
    else:
        write(draw, (0, 0), f"{rows * width // pixels_per_step} timesteps of {pixels_per_step} pixels, "
                            "read left to right, top to bottom;")
        write(draw, (0, 14), "the blue lines mark where timesteps start" if pixels_per_step >= 4 else
                             f"each row of the picture is {width // pixels_per_step} timesteps")
    for index, (top, left) in enumerate(cells):
        write(draw, (left + cell_width // 2, top - 2), f"label {int(labels[index])}", anchor="ms")
        if index % columns == 0:
            row_axis(draw, left - 4, top, rows, row_step)
    return framed(picture)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Counts, int64 [10, 10]: entry [t, p] = images of digit t predicted as p.

    labels, predictions: int [N]. Each row sums to the number of images of
    that digit; the diagonal holds the correct answers.
    """
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ in shape")
    counts = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts


def confusion_matrix_figure(counts: np.ndarray, title: str) -> np.ndarray:
    """Draw a [10, 10] confusion matrix with every count written in its cell; title: one or more lines.

    Colours are on a log scale so that a handful of mistakes off the
    diagonal stand out next to the hundreds of correct answers on it; empty
    cells stay white.
    """
    cell = 30
    title_lines = title.splitlines()
    left, top = 36, 4 + 14 * len(title_lines) + 4
    grid = cell * NUM_CLASSES
    canvas = np.full((top + grid + 32, left + grid + 8, 3), 255, np.uint8)
    most = max(int(counts.max()), 2)
    shade = np.log(np.maximum(counts, 1)) / np.log(most)  # 0 for a count of 1, 1 for the largest
    colours = np.round(255 * colormaps["Blues"](0.15 + 0.85 * shade)[..., :3]).astype(np.uint8)  # (10, 10, 3)
    for true_digit in range(NUM_CLASSES):
        for predicted in range(NUM_CLASSES):
            if counts[true_digit, predicted]:  # an empty cell stays white
                y, x = top + true_digit * cell, left + predicted * cell
                canvas[y + 1:y + cell, x + 1:x + cell] = colours[true_digit, predicted]  # 1-pixel white gaps
    canvas[top:top + grid + 1:cell, left:left + grid + 1] = GREY  # the grid: horizontal lines,
    canvas[top:top + grid + 1, left:left + grid + 1:cell] = GREY  # vertical lines
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    for number, line in enumerate(title_lines):
        write(draw, (left + grid // 2, 4 + 14 * number), line, size=11, anchor="ma")
    for true_digit in range(NUM_CLASSES):
        for predicted in range(NUM_CLASSES):
            count = int(counts[true_digit, predicted])
            if count:
                on_dark = shade[true_digit, predicted] > 0.5  # dark cells get white text
                write(draw, (left + predicted * cell + cell // 2 + 1, top + true_digit * cell + cell // 2 + 1),
                      str(count), anchor="mm", fill=WHITE if on_dark else BLACK)
    for digit in range(NUM_CLASSES):
        write(draw, (left - 4, top + digit * cell + cell // 2), str(digit), anchor="rm")
        write(draw, (left + digit * cell + cell // 2, top + grid + 3), str(digit), anchor="ma")
    write(draw, (left + grid // 2, top + grid + 17), "predicted digit", anchor="ma")
    write_upwards(picture, (9, top + grid // 2), "true digit")
    return framed(picture)


def misclassified_figure(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                         columns: int = 5) -> np.ndarray:
    """A grid of wrongly classified digits, each under "true -> predicted".

    images: [N, rows, columns] (uint8 or float in [0, 1]); labels,
    predictions: int [N], N >= 1 (only the mistakes: the caller selects them).
    """
    count, height, width = images.shape[:3]
    scale, gap, label, header = 2, 14, 14, 18
    columns = min(columns, count)
    cell_width, cell_height = width * scale, label + height * scale + 6
    lines = -(-count // columns)  # ceil
    canvas = np.full((header + lines * cell_height, columns * (cell_width + gap) - gap + 2, 3), 255, np.uint8)
    places = []
    for index, image in enumerate(images):
        top = header + (index // columns) * cell_height + label
        left = 1 + (index % columns) * (cell_width + gap)
        canvas[top - 1:top + height * scale + 1, left - 1:left + cell_width + 1] = GREY  # a frame: the image's edge
        canvas[top:top + height * scale, left:left + cell_width] = digit_pixels(image, scale)
        places.append((top, left))
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    write(draw, (0, 0), "true digit \u2192 the network's answer")
    for index, (top, left) in enumerate(places):
        write(draw, (left + cell_width // 2, top - 3), f"{int(labels[index])} \u2192 {int(predictions[index])}",
              anchor="ms", fill=DARK_RED)
    return framed(picture)


def reading_row_by_row_figure(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                              settled_at: list[int], columns: int = 2) -> np.ndarray:
    """Each digit next to the network's class probabilities after each of its rows.

    images: [N, T, F] (uint8 or float in [0, 1]); labels: int [N];
    probabilities: float [N, T, 10], probabilities[n, t] = P(digit | rows
    0..t of image n); settled_at: per image, the row from which the answer
    no longer changes. Image row t and probability row t are drawn side by
    side at the same height, rows numbered on the left, so one can see which
    stroke made the network change its mind.
    """
    count, rows, width = images.shape[:3]
    axis, strip_gap, column_width, gap, title, below, header = 18, 4, 6, 14, 28, 14, 30
    digit_width, height = width * SCALE, rows * SCALE
    strip_left = axis + digit_width + strip_gap  # within a panel
    panel_width = strip_left + NUM_CLASSES * column_width
    panel_height = title + height + below
    columns = min(columns, count)
    lines = -(-count // columns)  # ceil
    canvas = np.full((header + lines * panel_height, columns * (panel_width + gap) - gap, 3), 255, np.uint8)
    # viridis: dark = improbable, yellow = probable; each probability a SCALE-high, column_width-wide block.
    heat = np.round(255 * colormaps["viridis"](np.asarray(probabilities, dtype=np.float64))[..., :3]).astype(np.uint8)
    heat = np.repeat(np.repeat(heat, SCALE, axis=1), column_width, axis=2)  # (N, T*SCALE, 10*column_width, 3)
    panels = []
    for index, image in enumerate(images):
        top = header + (index // columns) * panel_height + title
        left = (index % columns) * (panel_width + gap)
        canvas[top:top + height, left + axis:left + axis + digit_width] = digit_pixels(image, SCALE)
        canvas[top:top + height, left + strip_left:left + panel_width] = heat[index]
        settled = top + settled_at[index] * SCALE  # the top edge of the row from which the answer stays
        canvas[max(settled - 1, top):settled + 1, left + strip_left:left + panel_width] = WHITE
        panels.append((top, left))
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)
    write(draw, (0, 0), "beside each image: P(digit) after reading its rows 0..t,")
    write(draw, (0, 14), "one row per image row (bright = probable)")
    for index, (top, left) in enumerate(panels):
        answer = int(np.argmax(probabilities[index, -1]))
        right = answer == int(labels[index])
        write(draw, (left, top - title), f"true {int(labels[index])}, answer {answer}",
              fill=BLACK if right else DARK_RED)
        write(draw, (left, top - title + 13), f"settled at row {settled_at[index]} (white line)", size=9)
        row_axis(draw, left + axis - 3, top, rows, SCALE)
        for digit in range(NUM_CLASSES):
            write(draw, (left + strip_left + digit * column_width + column_width // 2, top + height + 2), str(digit),
                  size=8, anchor="ma")
    return framed(picture)
