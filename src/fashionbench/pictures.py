"""Image files made into pictures as the training data are, for `fashionbench predict`.

Each picture becomes 28x28 grayscale, a light object on a dark background, cropped to the object
and centred; an IDX file gives its 28x28 images as they are. Each input that cannot be read gets
one error line naming it, and the others are still read. A picture's contrast says whether it
shows anything to classify.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashionbench.core.idx import DataError, parse_idx, read_idx_bytes

# How big the object is drawn in the 28x28 frame, as each dataset was made: Fashion-MNIST
# resized each product's longest edge to 28; MNIST fitted each digit into a 20x20 box.
OBJECT_SIZE = {"fashion_mnist": 28, "mnist": 20}

# A picture's contrast is the std of its pixels (0-255), both as given and as the 28x28 picture the
# model gets, whichever is lower: framing gives a uniform 300x200 picture edges of its own (a grey
# rectangle on black), and cropping can turn a picture into a uniform 28x28 one (a speck on white).
# Below this the picture shows next to nothing and its top classes are a guess. Every one of the
# 140,000 Fashion-MNIST and MNIST images has at least 16.5 (18.9 upscaled to 56 px and prepared as
# a photo is); a uniform picture has 0, grey noise of +-4 levels 1.1.
LOW_CONTRAST_STD = 10.0

IDX_SUFFIXES = ("-ubyte", "-ubyte.gz", ".idx", ".idx.gz")
READABLE = "expected PNG, JPEG or another image Pillow reads, or an IDX file"


class UnreadableInput(Exception):
    """An input path that gives no picture: one line naming it and what was expected."""


@dataclass
class Picture:
    source: str            # the file (and the index inside an IDX file)
    pixels: np.ndarray     # uint8 (28, 28), light object on dark
    inverted: bool | None  # None: IDX images, used as they are
    contrast: float        # see LOW_CONTRAST_STD

    @property
    def warning(self) -> str | None:
        if self.contrast >= LOW_CONTRAST_STD:
            return None
        return (f"almost no contrast (pixel std {self.contrast:.1f} of 255, below {LOW_CONTRAST_STD:g}): "
                "the picture shows next to nothing, its classes are a guess")


def one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def is_idx(path: Path) -> bool:
    return path.name.endswith(IDX_SUFFIXES)


def image_files(directory: Path) -> list[Path]:
    from PIL import Image

    readable = {ext.lower() for ext in Image.registered_extensions()}
    try:
        files = sorted(p for p in directory.iterdir() if p.is_file() and (p.suffix.lower() in readable or is_idx(p)))
    except OSError as exc:
        raise UnreadableInput(f"{directory}: cannot list this directory ({one_line(exc)})") from None
    if not files:
        raise UnreadableInput(f"{directory}: no images in this directory ({READABLE})")
    return files


def light_background(gray: np.ndarray) -> bool:
    """Whether the picture's border is mostly light: the object is then dark on light."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border)) > 127


def to_training_format(gray: np.ndarray, invert: bool, dataset: str) -> np.ndarray:
    """Grayscale of any size -> uint8 28x28, object light on dark, cropped to it, its longest
    side scaled to the dataset's object size, centred. A 28x28 picture is taken as already
    framed (a dataset image saved as PNG comes back exactly)."""
    from PIL import Image

    if invert:
        gray = 255 - gray
    if gray.shape == (28, 28):
        return np.ascontiguousarray(gray, dtype=np.uint8)
    ink = np.argwhere(gray > 32)  # the object: what stands out of the dark background
    if len(ink):
        (top, left), (bottom, right) = ink.min(0), ink.max(0) + 1
        gray = gray[top:bottom, left:right]
    size = OBJECT_SIZE[dataset]
    scale = size / max(gray.shape)
    width, height = max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale))
    thumb = Image.fromarray(gray).resize((width, height), Image.Resampling.LANCZOS)
    frame = Image.new("L", (28, 28), 0)
    frame.paste(thumb, ((28 - width) // 2, (28 - height) // 2))
    return np.asarray(frame, dtype=np.uint8)


def read_image(path: Path, invert: str, dataset: str) -> Picture:
    from PIL import Image, UnidentifiedImageError

    try:
        if path.stat().st_size == 0:
            raise UnreadableInput(f"{path}: empty file ({READABLE})")
        with Image.open(path) as image:
            image.load()  # decode now: a truncated or corrupt file fails here, not later
            gray = np.asarray(image.convert("L"), dtype=np.uint8)
    except UnidentifiedImageError:
        raise UnreadableInput(f"{path}: not an image Pillow can read ({READABLE})") from None
    except Image.DecompressionBombError as exc:  # Pillow refuses pictures past twice its MAX_IMAGE_PIXELS
        raise UnreadableInput(f"{path}: too large to decode safely ({one_line(exc)})") from None
    except (OSError, SyntaxError, ValueError) as exc:  # Pillow reports corrupt data as these
        raise UnreadableInput(f"{path}: corrupt or truncated image ({one_line(exc)}; expected a complete image file)") from None
    flip = light_background(gray) if invert == "auto" else invert == "yes"
    pixels = to_training_format(gray, flip, dataset)
    return Picture(str(path), pixels, flip, min(float(gray.std()), float(pixels.std())))


def read_idx_images(path: Path) -> list[Picture]:
    try:
        images = parse_idx(read_idx_bytes(path), str(path))
    except DataError as exc:
        raise UnreadableInput(str(exc)) from None
    except OSError as exc:
        raise UnreadableInput(f"{path}: cannot read ({one_line(exc)})") from None
    if images.ndim != 3 or images.shape[1:] != (28, 28) or not len(images):
        raise UnreadableInput(f"{path}: expected IDX images of shape (N, 28, 28), N >= 1, got {images.shape}")
    return [Picture(f"{path}[{i}]", images[i], None, float(images[i].std())) for i in range(len(images))]


def input_files(path: Path) -> list[Path]:
    if not path.exists():
        raise UnreadableInput(f"{path}: no such file or directory")
    return image_files(path) if path.is_dir() else [path]


def read_pictures(paths: list[str], invert: str, dataset: str) -> tuple[list[Picture], list[str]]:
    """The pictures of every input that reads, and one error line per input that does not (a
    missing path, an empty directory, a file that is not a whole image): one bad file in a
    directory of photos does not stop the others."""
    pictures, errors = [], []
    for name in paths:
        try:
            files = input_files(Path(name))
        except UnreadableInput as exc:
            errors.append(str(exc))
            continue
        for file in files:
            try:
                pictures += read_idx_images(file) if is_idx(file) else [read_image(file, invert, dataset)]
            except UnreadableInput as exc:
                errors.append(str(exc))
    return pictures, errors
