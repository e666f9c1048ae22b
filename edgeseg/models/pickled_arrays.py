"""detectron2 model-zoo checkpoints (``.pkl``): a pickled dict of numpy arrays, read without running code.

The official MaskFormer / detectron2 weights are published as ``{"model": {name: numpy array}, "__author__": ...}``
pickles. ``torch.load(weights_only=True)`` cannot read them (no torch archive), and a plain ``pickle.load`` could
run any code the file names. :func:`read_pickled_arrays` unpickles with an allow-list of the globals numpy arrays
need (array and scalar reconstruction, dtypes, the bytes codec); any other global is refused. Arrays become
tensors; arrays of Python objects are refused.
"""

from __future__ import annotations

import codecs
import collections
import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

# numpy ≥ 2 keeps the pickling helpers in numpy._core; pickles written by numpy 1.x name numpy.core (and back).
_multiarray = importlib.import_module(
    "numpy._core.multiarray" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core.multiarray"
)

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{
        (module, "_reconstruct"): _multiarray._reconstruct
        for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    },
    **{(module, "scalar"): _multiarray.scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global that is not needed to rebuild numpy arrays."""


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[module, name]
        except KeyError:
            raise UnsafePickleError(
                f"it names {module}.{name}, which is not needed for numpy arrays and is never loaded (it could run "
                "code)"
            ) from None


def _to_tensors(obj: Any) -> Any:
    """numpy arrays (and scalars) in nested dicts → tensors; object arrays are refused."""
    if isinstance(obj, dict):
        return {key: _to_tensors(value) for key, value in obj.items()}
    if isinstance(obj, np.ndarray | np.generic):
        array = np.asarray(obj)
        if array.dtype.kind not in "biuf":
            raise pickle.UnpicklingError(f"it holds an array of dtype {array.dtype}, not numbers")
        return torch.from_numpy(array.copy())
    return obj


def read_pickled_arrays(path: Path) -> Any:
    """The object in ``path`` with every numpy array as a tensor; raises ``pickle.UnpicklingError`` (or
    :class:`UnsafePickleError`) for files that are not such a pickle."""
    with path.open("rb") as file:
        return _to_tensors(_ArrayUnpickler(file, encoding="latin1").load())
