"""Load data-set pickles (CIFAR-10/100) without ever running code from the file.

A pickle names the Python callables that rebuild its objects; the standard unpickler imports and calls
whatever it names, so a doctored ``data_batch_1`` could run ``os.system``. The unpickler here resolves
names only from a fixed table holding what numpy arrays and plain containers need, and refuses the rest.
"""

from __future__ import annotations

import codecs
import io
import pickle
import struct
from collections import OrderedDict
from pathlib import Path
from typing import IO, Any

import numpy as np

from ssl_toolkit.errors import UserInputError

try:  # numpy >= 2 moved the implementation to numpy._core; numpy.core is a shim that warns on access
    import numpy._core.multiarray as _multiarray
    import numpy._core.numeric as _numeric
except ImportError:  # pragma: no cover - numpy 1.x
    import numpy.core.multiarray as _multiarray  # type: ignore[no-redef]
    import numpy.core.numeric as _numeric  # type: ignore[no-redef]


def _numpy_names(module_suffix: str, names: dict[str, Any]) -> dict[tuple[str, str], Any]:
    # Pickles written by numpy 1.x name numpy.core.*, those by numpy 2.x name numpy._core.*.
    table = {}
    for prefix in ("numpy.core.", "numpy._core."):
        for name, obj in names.items():
            table[(prefix + module_suffix, name)] = obj
    return table


# (module, name) as written in the pickle -> the object it may resolve to. Python 2 pickles (the
# official CIFAR files) say __builtin__ / copy_reg; Python 3 ones say builtins / _codecs.
_ALLOWED: dict[tuple[str, str], Any] = {
    **_numpy_names("multiarray", {"_reconstruct": _multiarray._reconstruct, "scalar": _multiarray.scalar}),
    **_numpy_names("numeric", {"_frombuffer": _numeric._frombuffer}),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
    ("collections", "OrderedDict"): OrderedDict,
}
for _builtins_module in ("builtins", "__builtin__"):
    for _type in (list, dict, tuple, set, frozenset, bytes, bytearray, str, int, float, complex, bool):
        _ALLOWED[(_builtins_module, _type.__name__)] = _type
_ALLOWED[("__builtin__", "unicode")] = str
_ALLOWED[("__builtin__", "long")] = int


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals only from the fixed table ``_ALLOWED``."""

    def __init__(self, file: IO[bytes], source: str, encoding: str) -> None:
        super().__init__(file, encoding=encoding)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UserInputError(
                f"{self._source}: refused to load global '{module}.{name}' from a data pickle; "
                "data files may hold only numpy arrays and plain containers (a doctored file could run code)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UserInputError(f"{self._source}: data pickles must not use persistent ids (found {pid!r})")


# What a truncated or garbled pickle makes the unpickler (or numpy's __setstate__) raise.
_CORRUPT_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    struct.error,
    UnicodeDecodeError,
    OverflowError,
)


def safe_load_pickle(path_or_fileobj: str | Path | IO[bytes], encoding: str = "latin1") -> Any:
    """Unpickle a data file, admitting only numpy arrays, numpy scalars/dtypes and builtin containers.

    ``encoding="latin1"`` reads Python 2 pickles (the official CIFAR files) with their numpy arrays
    intact; byte strings of the file come back as ``str``. Any other global (``os.system``,
    ``builtins.eval``, ...) raises :class:`UserInputError` naming the file and the refused global, before
    anything is called. Truncated or corrupt files raise :class:`UserInputError` too.
    """
    if isinstance(path_or_fileobj, (str, Path)):
        path = Path(path_or_fileobj)
        source = str(path.absolute())
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UserInputError(f"{source}: file not found") from None
        except OSError as error:
            raise UserInputError(f"{source}: cannot read file ({error.strerror or error})") from None
        stream: IO[bytes] = io.BytesIO(data)
    else:
        stream = path_or_fileobj
        source = str(getattr(path_or_fileobj, "name", "<stream>"))
    try:
        return _RestrictedUnpickler(stream, source, encoding).load()
    except UserInputError:
        raise
    except _CORRUPT_ERRORS as error:
        raise UserInputError(
            f"{source}: not a readable pickle, the file may be truncated or corrupt "
            f"({type(error).__name__}: {error})"
        ) from None
