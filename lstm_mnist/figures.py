"""The pictures in TensorBoard's IMAGES tab, drawn with matplotlib.

Each function takes plain NumPy arrays and returns one RGB image,
uint8 [height, width, 3], ready for `tf.summary.image`. Figures are built with
matplotlib's object-oriented API (a `Figure` on an Agg canvas), never through
`pyplot`, so nothing is kept in matplotlib's global state between calls and no
window is ever opened.

    sample_inputs_figure          the digits as the network reads them, cut into its timesteps
    confusion_matrix_figure       true digit (rows) against predicted digit (columns)
    misclassified_figure          the validation digits the network gets wrong, with both labels
    reading_row_by_row_figure     P(digit | rows 0..t) for every t, next to the image it reads
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from lstm_mnist.config import FEATURES, NUM_CLASSES, TIMESTEPS

# Small figures at a modest resolution: they are drawn every epoch, and
# drawing time is part of what logging costs (scripts/benchmark_logging.py).
DPI = 80


def to_rgb_array(figure: Figure) -> np.ndarray:
    """Render `figure` and return its pixels, uint8 [height, width, 3]."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()  # (H, W, 4) RGBA -> (H, W, 3) RGB


def show_digit(axes, image: np.ndarray, row_ticks: bool = False) -> None:
    """Draw one image, uint8 or float [28, 28], black ink on white like a page."""
    axes.imshow(image, cmap="gray_r", interpolation="nearest")
    axes.set_xticks([])
    if row_ticks:
        axes.set_yticks([0, TIMESTEPS // 2, TIMESTEPS - 1])
        axes.tick_params(labelsize=7)
    else:
        axes.set_yticks([])


def sample_inputs_figure(images: np.ndarray, labels: np.ndarray, pixels_per_step: int = FEATURES) -> np.ndarray:
    """A row of digits cut into the timesteps the network reads.

    images: [N, 28, 28] (uint8 or float in [0, 1]), each sequence laid out in
    lines of 28 pixels in the order it is read (data.sequences_as_pictures);
    labels: int [N]; pixels_per_step: K, the pixels of one timestep.
    Thin lines mark where a timestep starts: with the default K = 28, between
    the pixel rows (row 0 first, row 27 last).
    """
    count, height, width = images.shape
    figure = Figure(figsize=(1.3 * count, 1.9), dpi=DPI)
    # Where each timestep after the first starts: (line, column) of its first pixel in the picture.
    lines, columns = np.divmod(np.arange(pixels_per_step, height * width, pixels_per_step), width)
    at_line_start = columns == 0
    for index, (image, label) in enumerate(zip(images, labels)):
        axes = figure.add_subplot(1, count, index + 1)
        show_digit(axes, image, row_ticks=index == 0)
        # A horizontal line where a timestep starts at the beginning of a line of the picture...
        axes.hlines(lines[at_line_start] - 0.5, -0.5, width - 0.5, colors="tab:blue", linewidth=0.3, alpha=0.6)
        if pixels_per_step >= 4:  # ...and a short tick where one starts inside a line (too dense below 4 pixels)
            axes.vlines(columns[~at_line_start] - 0.5, lines[~at_line_start] - 0.5, lines[~at_line_start] + 0.5,
                        colors="tab:blue", linewidth=0.3, alpha=0.6)
        axes.set_title(f"label {int(label)}", fontsize=8)
    figure.axes[0].set_ylabel("row = timestep t" if pixels_per_step == width else f"{pixels_per_step} pixels a step",
                              fontsize=7)
    figure.subplots_adjust(left=0.06, right=0.99, bottom=0.02, top=0.85, wspace=0.15)
    return to_rgb_array(figure)


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
    """Draw a [10, 10] confusion matrix with every count written in its cell.

    Colours are on a log scale so that a handful of mistakes off the
    diagonal stand out next to the hundreds of correct answers on it; empty
    cells stay white.
    """
    figure = Figure(figsize=(4.6, 4.2), dpi=DPI)
    axes = figure.add_subplot(1, 1, 1)
    shown = np.ma.masked_equal(counts, 0)  # zero counts: no colour
    axes.imshow(shown, cmap="Blues", norm=LogNorm(vmin=1, vmax=max(int(counts.max()), 2)))
    for true_digit in range(NUM_CLASSES):
        for predicted in range(NUM_CLASSES):
            count = int(counts[true_digit, predicted])
            if count:
                on_dark = count > np.sqrt(max(int(counts.max()), 1))  # dark cells get white text
                axes.text(predicted, true_digit, str(count), ha="center", va="center", fontsize=7,
                          color="white" if on_dark else "black")
    axes.set_xticks(range(NUM_CLASSES))
    axes.set_yticks(range(NUM_CLASSES))
    axes.set_xlabel("predicted digit")
    axes.set_ylabel("true digit")
    axes.set_title(title, fontsize=9)
    figure.subplots_adjust(left=0.12, right=0.98, bottom=0.11, top=0.92)
    return to_rgb_array(figure)


def tile(images: np.ndarray, columns: int, gap: int = 2, fill: float = 1.0) -> np.ndarray:
    """Lay [N, h, w, ...] pictures out in a grid: [rows*(h+gap), columns*(w+gap), ...], gaps filled with `fill`.

    Drawing one big picture in one set of axes is about ten times faster
    than one matplotlib subplot per digit, which matters for a figure drawn
    every epoch.
    """
    count, height, width = images.shape[:3]
    rows = -(-count // columns)  # ceil
    canvas = np.full((rows * (height + gap), columns * (width + gap), *images.shape[3:]), fill, dtype=np.float32)
    for index, picture in enumerate(images):
        top, left = (index // columns) * (height + gap), (index % columns) * (width + gap)
        canvas[top:top + height, left:left + width] = picture
    return canvas


def misclassified_figure(images: np.ndarray, labels: np.ndarray, predictions: np.ndarray,
                         columns: int = 8) -> np.ndarray:
    """A grid of wrongly classified digits, each labelled with its true and predicted digit.

    images: [N, 28, 28] floats in [0, 1]; labels, predictions: int [N],
    N >= 1 (only the mistakes: the caller selects them).
    """
    count, height, width = images.shape
    gap = 10  # room for the label above each digit
    columns = min(columns, count)
    grid = tile(1.0 - np.asarray(images, dtype=np.float32), columns, gap=gap)  # (rows*(h+gap), columns*(w+gap))
    grid = np.pad(grid, ((gap, 0), (0, 0)), constant_values=1.0)[:-gap]  # each label sits above its digit
    figure = Figure(figsize=(grid.shape[1] / 28, grid.shape[0] / 28), dpi=DPI)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    for index in range(count):
        top, left = (index // columns) * (height + gap), (index % columns) * (width + gap)
        axes.text(left + width / 2, top + gap - 2, f"true {int(labels[index])}  pred {int(predictions[index])}",
                  ha="center", va="bottom", fontsize=7, color="darkred")
    axes.set_axis_off()
    return to_rgb_array(figure)


def reading_row_by_row_figure(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                              settled_at: list[int]) -> np.ndarray:
    """Each digit next to the network's class probabilities after each of its rows.

    images: [N, 28, 28] floats in [0, 1]; labels: int [N]; probabilities:
    float [N, 28, 10], probabilities[n, t] = P(digit | rows 0..t of image n);
    settled_at: per image, the row from which the answer no longer changes.
    Image row t and probability row t are drawn side by side at the same
    height, so one can see which stroke made the network change its mind.
    """
    count, height, width = images.shape
    stretch = 2  # each digit's probability column is 2 pixels wide, so the ten columns are legible
    title_band, label_band = 11, 5  # room above each pair for its title, below for the digits 0..9
    columns = min(3, count)
    digit_rgb = np.repeat(1.0 - np.asarray(images, dtype=np.float32)[..., np.newaxis], 3, axis=-1)  # (N, h, w, 3)
    heat_rgb = colormaps["viridis"](np.repeat(probabilities, stretch, axis=2))[..., :3]  # (N, h, 10*stretch, 3)
    heat_left = width + 1  # digit | 1 px | probabilities
    block = np.ones((count, title_band + height + label_band, heat_left + NUM_CLASSES * stretch, 3), np.float32)
    block[:, title_band:title_band + height, :width] = digit_rgb
    block[:, title_band:title_band + height, heat_left:] = heat_rgb
    gap = 3
    grid = tile(block, columns=columns, gap=gap)  # one picture, drawn in one set of axes
    scale = 4  # screen pixels per image pixel
    figure = Figure(figsize=(grid.shape[1] * scale / DPI, (grid.shape[0] + 8) * scale / DPI), dpi=DPI)
    axes = figure.add_axes((0, 0, 1, grid.shape[0] / (grid.shape[0] + 8)))
    axes.imshow(grid, interpolation="nearest")
    for index in range(count):
        top = (index // columns) * (block.shape[1] + gap)
        left = (index % columns) * (block.shape[2] + gap)
        final = int(np.argmax(probabilities[index, -1]))
        title = f"a {int(labels[index])}: says {final}, settled at row {settled_at[index]}"
        axes.text(left, top + title_band - 1, title, fontsize=8, va="bottom")
        # From the white line down, the most probable digit stays the final answer.
        axes.hlines(top + title_band + settled_at[index] - 0.5, left + heat_left - 0.5,
                    left + heat_left + NUM_CLASSES * stretch - 0.5, colors="white", linewidth=1.2)
        for digit in range(NUM_CLASSES):
            axes.text(left + heat_left + digit * stretch + (stretch - 1) / 2, top + title_band + height,
                      str(digit), fontsize=6, ha="center", va="top")
    axes.set_axis_off()
    figure.suptitle("P(digit | rows 0..t), row t beside image row t; bright = probable", fontsize=8, y=0.995)
    return to_rgb_array(figure)
