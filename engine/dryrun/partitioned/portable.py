"""What crosses between a partition and the coordinator (training rows, models, results) as bytes.

Plain pickle, except that read-only mappings (`types.MappingProxyType`, which the features and
the models use so that nothing changes them by mistake) cannot be pickled: here they go as the
dict they show and come back read-only. Only this pickler knows that (its own dispatch table),
not the process's. The objects come back exactly as they were, so the models trained on the rows
and the scores read from the models are those of a single process.
"""

from __future__ import annotations

import copyreg
import io
import pickle
from types import MappingProxyType
from typing import Any


def _read_only(mapping: MappingProxyType) -> tuple[Any, ...]:
    return read_only, (dict(mapping),)


def read_only(mapping: dict[Any, Any]) -> MappingProxyType:
    """A read-only mapping again, on the other side (`MappingProxyType` has no importable name)."""
    return MappingProxyType(mapping)


_DISPATCH = {**copyreg.dispatch_table, MappingProxyType: _read_only}


def dumps(value: Any) -> bytes:
    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(value)
    return out.getvalue()


def loads(data: bytes) -> Any:
    return pickle.loads(data)
