"""Write tiny data sets in the official file formats, for the reader tests.

Every writer follows the published description of its format, written out index by index rather than
with the reshapes the readers use, so a layout bug in a reader cannot be mirrored here. Pixel values
encode their position (see ``position_images``): a reader that swaps rows and columns, or channels,
returns different numbers. Each writer returns the arrays a correct reader must give back.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Expected:
    """What a reader must return for the files a writer made."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_unlabeled: np.ndarray | None = None


def position_images(n: int, c: int, h: int, w: int, offset: int = 0) -> np.ndarray:
    """uint8 images with ``x[i, ch, row, col] = (7 + 3(i+offset) + 41 ch + 17 row + 5 col) mod 251``.

    251 is prime, so swapping rows and columns (17 vs 5), or channels, changes the value at every
    position where the swapped indices differ.
    """
    axes = (np.arange(n) + offset, np.arange(c), np.arange(h), np.arange(w))
    i, ch, row, col = np.meshgrid(*axes, indexing="ij")
    return ((7 + 3 * i + 41 * ch + 17 * row + 5 * col) % 251).astype(np.uint8)


# ------------------------------------------------------------------------------ Python 2 style pickles


class _Py2Pickler:
    """Emits protocol-2 pickles the way Python 2's cPickle wrote the official CIFAR files.

    Python 3's pickler cannot write a Python 2 ``str`` (it writes bytes through ``_codecs.encode``),
    and numpy arrays in those files carry their raw data as such a string, named through
    ``numpy.core.multiarray._reconstruct``. This writes exactly those opcodes.
    """

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")  # PROTO 2

    def global_(self, module: str, name: str) -> None:
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    def string(self, data: bytes) -> None:  # a Python 2 str: SHORT_BINSTRING or BINSTRING
        if len(data) < 256:
            self.out += b"U" + bytes([len(data)]) + data
        else:
            self.out += b"T" + struct.pack("<i", len(data)) + data

    def integer(self, value: int) -> None:
        if 0 <= value < 256:
            self.out += b"K" + bytes([value])
        elif 0 <= value < 65536:
            self.out += b"M" + struct.pack("<H", value)
        else:
            self.out += b"J" + struct.pack("<i", value)

    def tuple_(self, items: tuple) -> None:
        self.out += b"("
        for item in items:
            self.value(item)
        self.out += b"t"

    def array(self, a: np.ndarray) -> None:
        assert a.dtype == np.uint8
        self.global_("numpy.core.multiarray", "_reconstruct")
        self.global_("numpy", "ndarray")
        self.tuple_((0,))
        self.string(b"b")
        self.out += b"\x87R("  # TUPLE3, REDUCE, then MARK for the state tuple
        self.integer(1)
        self.tuple_(tuple(a.shape))
        self.global_("numpy", "dtype")
        self.tuple_(("u1", 0, 1))
        self.out += b"R"
        self.tuple_((3, "|", None, None, None, -1, -1, 0))
        self.out += b"b\x89"  # BUILD the dtype; NEWFALSE: not Fortran-ordered
        self.string(np.ascontiguousarray(a).tobytes())
        self.out += b"tb"  # end of state tuple, BUILD the array

    def value(self, v: object) -> None:
        if v is None:
            self.out += b"N"
        elif isinstance(v, bool):
            raise TypeError("not needed by the CIFAR files")
        elif isinstance(v, int):
            self.integer(v)
        elif isinstance(v, str):
            self.string(v.encode("latin1"))
        elif isinstance(v, np.ndarray):
            self.array(v)
        elif isinstance(v, tuple):
            self.tuple_(v)
        elif isinstance(v, list):
            self.out += b"](" if v else b"]"
            for item in v:
                self.value(item)
            if v:
                self.out += b"e"
        elif isinstance(v, dict):
            self.out += b"}("
            for key, item in v.items():
                self.value(key)
                self.value(item)
            self.out += b"u"
        else:
            raise TypeError(type(v))


def py2_pickle(obj: object) -> bytes:
    """Bytes of ``obj`` (dicts, lists, str, int, uint8 arrays) pickled as Python 2 did."""
    pickler = _Py2Pickler()
    pickler.value(obj)
    return bytes(pickler.out) + b"."


# --------------------------------------------------------------------------------------------- CIFAR


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """Per the CIFAR page: 1024 red, 1024 green, 1024 blue values, each plane row-major."""
    n = len(images)
    rows = np.zeros((n, 3072), np.uint8)
    for i in range(n):
        for c in range(3):
            for h in range(32):
                for w in range(32):
                    rows[i, c * 1024 + h * 32 + w] = images[i, c, h, w]
    return rows


def write_cifar10(
    parent: Path, per_batch: int = 2, n_test: int = 3, labels_test: list[int] | None = None
) -> Expected:
    """``parent/cifar-10-batches-py/`` with five training batches, a test batch and ``batches.meta``."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    x_train = position_images(5 * per_batch, 3, 32, 32)
    y_train = np.arange(5 * per_batch) % 10
    for b in range(5):
        part = slice(b * per_batch, (b + 1) * per_batch)
        batch = {
            "batch_label": f"training batch {b + 1} of 5",
            "labels": [int(v) for v in y_train[part]],
            "data": cifar_rows(x_train[part]),
            "filenames": [f"img_{i}.png" for i in range(per_batch)],
        }
        (folder / f"data_batch_{b + 1}").write_bytes(py2_pickle(batch))
    x_test = position_images(n_test, 3, 32, 32, offset=100)
    y_test = np.array(labels_test if labels_test is not None else [9 - i % 10 for i in range(n_test)])
    test = {"batch_label": "testing batch 1 of 1", "labels": [int(v) for v in y_test],
            "data": cifar_rows(x_test), "filenames": [f"t_{i}.png" for i in range(n_test)]}
    (folder / "test_batch").write_bytes(py2_pickle(test))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(py2_pickle({"num_cases_per_batch": per_batch, "label_names": names,
                                                      "num_vis": 3072}))
    return Expected(x_train, y_train, x_test, y_test)


def write_cifar100(parent: Path, n_train: int = 4, n_test: int = 3) -> Expected:
    """``parent/cifar-100-python/{train, test, meta}`` with distinct fine and coarse labels."""
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    expected = Expected(position_images(n_train, 3, 32, 32), 99 - np.arange(n_train) * 7,
                        position_images(n_test, 3, 32, 32, offset=50), np.arange(n_test) * 11 + 5)
    splits = (("train", expected.x_train, expected.y_train), ("test", expected.x_test, expected.y_test))
    for name, x, fine in splits:
        batch = {"filenames": [f"{name}_{i}.png" for i in range(len(x))], "batch_label": f"{name} batch",
                 "fine_labels": [int(v) for v in fine], "coarse_labels": [int(v) // 5 for v in fine],
                 "data": cifar_rows(x)}
        (folder / name).write_bytes(py2_pickle(batch))
    meta = {"fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"c{i}" for i in range(20)]}
    (folder / "meta").write_bytes(py2_pickle(meta))
    return expected


# ---------------------------------------------------------------------------------------------- SVHN


def svhn_mat_arrays(images: np.ndarray, digits: np.ndarray) -> dict[str, np.ndarray]:
    """Per the SVHN page: X is (32, 32, 3, N) so X[:, :, :, i] is image i; y is (N, 1) with 10 for 0."""
    n = len(images)
    x = np.zeros((32, 32, 3, n), np.uint8)
    for i in range(n):
        for c in range(3):
            x[:, :, c, i] = images[i, c]
    y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(n, 1)
    return {"X": x, "y": y}


def write_svhn(folder: Path, n_train: int = 4, n_test: int = 3, n_extra: int = 2) -> Expected:
    """``folder/{train,test,extra}_32x32.mat``; digit 0 appears, so label 10 is in the files."""
    import scipy.io

    folder.mkdir(parents=True, exist_ok=True)
    expected = Expected(position_images(n_train, 3, 32, 32), np.arange(n_train) % 10,
                        position_images(n_test, 3, 32, 32, offset=30), (np.arange(n_test) + 7) % 10,
                        position_images(n_extra, 3, 32, 32, offset=60))
    scipy.io.savemat(folder / "train_32x32.mat", svhn_mat_arrays(expected.x_train, expected.y_train))
    scipy.io.savemat(folder / "test_32x32.mat", svhn_mat_arrays(expected.x_test, expected.y_test))
    extra = svhn_mat_arrays(expected.x_unlabeled, np.arange(n_extra) % 10)
    scipy.io.savemat(folder / "extra_32x32.mat", extra)
    return expected


# -------------------------------------------------------------------------------------------- STL-10


def stl_bytes(images: np.ndarray) -> bytes:
    """Per the STL-10 page: per image, red then green then blue, each channel column-major."""
    out = bytearray(len(images) * 3 * 96 * 96)
    for i in range(len(images)):
        for c in range(3):
            base = (i * 3 + c) * 96 * 96
            for w in range(96):
                out[base + w * 96: base + (w + 1) * 96] = images[i, c, :, w].tobytes()
    return bytes(out)


def write_stl10(parent: Path, n_train: int = 4, n_test: int = 4, n_unlabeled: int = 5) -> Expected:
    """``parent/stl10_binary/``: the five .bin files and ``class_names.txt``; labels 1..10 in the files."""
    folder = parent / "stl10_binary"
    folder.mkdir(parents=True)
    expected = Expected(position_images(n_train, 3, 96, 96), np.array([0, 9, 3, 5] * n_train)[:n_train],
                        position_images(n_test, 3, 96, 96, offset=20), (np.arange(n_test) * 3) % 10,
                        position_images(n_unlabeled, 3, 96, 96, offset=40))
    (folder / "train_X.bin").write_bytes(stl_bytes(expected.x_train))
    (folder / "train_y.bin").write_bytes((expected.y_train + 1).astype(np.uint8).tobytes())
    (folder / "test_X.bin").write_bytes(stl_bytes(expected.x_test))
    (folder / "test_y.bin").write_bytes((expected.y_test + 1).astype(np.uint8).tobytes())
    (folder / "unlabeled_X.bin").write_bytes(stl_bytes(expected.x_unlabeled))
    names = "airplane bird car cat deer dog horse monkey ship truck".split()
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    return expected


# ------------------------------------------------------------------------------------------ MNIST IDX


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: 0x00 0x00, type code 0x08 (unsigned byte), ndim, big-endian uint32 dims, row-major data."""
    assert array.dtype == np.uint8
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes(order="C")


MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def write_mnist(folder: Path, gz: bool, n_train: int = 5, n_test: int = 3) -> Expected:
    """The four MNIST IDX files in ``folder``, gzipped (as published) or plain."""
    folder.mkdir(parents=True, exist_ok=True)
    x_train = position_images(n_train, 1, 28, 28)[:, 0]
    x_test = position_images(n_test, 1, 28, 28, offset=9)[:, 0]
    y_train = (np.arange(n_train) * 3) % 10
    y_test = 9 - np.arange(n_test)
    contents = {"train_images": x_train, "train_labels": y_train,
                "test_images": x_test, "test_labels": y_test}
    for key, array in contents.items():
        data = idx_bytes(np.asarray(array, np.uint8))
        if gz:
            (folder / (MNIST_FILES[key] + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / MNIST_FILES[key]).write_bytes(data)
    return Expected(x_train[:, None], y_train, x_test[:, None], y_test)


# ---------------------------------------------------------------------------------------- image folder


def write_png(path: Path, image_chw: np.ndarray) -> None:
    """Save a (C, H, W) uint8 image (C 1 or 3) losslessly."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if image_chw.shape[0] == 1:
        Image.fromarray(image_chw[0], "L").save(path)
    else:
        Image.fromarray(np.ascontiguousarray(image_chw.transpose(1, 2, 0)), "RGB").save(path)


def write_imagefolder(root: Path, channels: int = 3, size: int = 8, unlabeled: int = 0) -> Expected:
    """``root/train/{cat,dog,emu}/`` (2 images each), ``root/test/{dog,emu}/`` (1 each), optional
    nested ``root/unlabeled/``. Classes sorted: cat 0, dog 1, emu 2."""
    x_train = position_images(6, channels, size, size)
    x_test = position_images(2, channels, size, size, offset=10)
    y_train = np.array([0, 0, 1, 1, 2, 2])
    y_test = np.array([1, 2])
    names = ["cat", "dog", "emu"]
    for i, label in enumerate(y_train):
        write_png(root / "train" / names[label] / f"{i:02d}.png", x_train[i])
    for i, label in enumerate(y_test):
        write_png(root / "test" / names[label] / f"{i:02d}.png", x_test[i])
    x_unlabeled = None
    if unlabeled:
        x_unlabeled = position_images(unlabeled, channels, size, size, offset=20)
        for i in range(unlabeled):
            # Nested sub-folders: the unlabeled pool is searched recursively, in sorted path order.
            write_png(root / "unlabeled" / f"part{i % 2}" / f"{i:02d}.png", x_unlabeled[i])
        order = sorted(range(unlabeled), key=lambda i: (f"part{i % 2}", f"{i:02d}"))
        x_unlabeled = x_unlabeled[order]
    return Expected(x_train, y_train, x_test, y_test, x_unlabeled)


# ------------------------------------------------------------------------------------------------ npz


def write_npz(path: Path, layout: str = "NCHW", channels: int = 3, float01: bool = False,
              unlabeled: int = 0) -> Expected:
    """``np.savez`` arrays with images stored as ``layout`` ("NCHW", "NHWC" or "NHW")."""
    expected = Expected(position_images(4, channels, 6, 5), np.array([0, 1, 2, 1]),
                        position_images(2, channels, 6, 5, offset=5), np.array([2, 0]),
                        position_images(unlabeled, channels, 6, 5, offset=9) if unlabeled else None)

    def stored(x: np.ndarray) -> np.ndarray:
        if layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        elif layout == "NHW":
            assert x.shape[1] == 1
            x = x[:, 0]
        return x.astype(np.float32) / 255.0 if float01 else x

    arrays = {"x_train": stored(expected.x_train), "y_train": expected.y_train,
              "x_test": stored(expected.x_test), "y_test": expected.y_test}
    if unlabeled:
        arrays["x_unlabeled"] = stored(expected.x_unlabeled)
    np.savez(path, **arrays)
    return expected


# ------------------------------------------------------------------------------------- hostile files


class _RunsCommand:
    """Unpickling this calls ``func(arg)``: how a doctored data file would run code."""

    def __init__(self, func: object, arg: str) -> None:
        self.func, self.arg = func, arg

    def __reduce__(self) -> tuple:
        return (self.func, (self.arg,))


def malicious_pickle(func: object, arg: str) -> bytes:
    """A CIFAR-shaped pickle whose loading would call ``func(arg)`` (e.g. ``os.system``)."""
    # fix_imports=False keeps Python 3 module names (builtins.eval, not __builtin__.eval).
    return pickle.dumps({"data": _RunsCommand(func, arg), "labels": [0]}, protocol=2, fix_imports=False)
