"""One base for what is released with ``close()`` or a ``with`` block (runners, segmenters, sources)."""

from __future__ import annotations

from types import TracebackType
from typing import TypeVar

ClosingType = TypeVar("ClosingType", bound="Closeable")


class Closeable:
    """``with obj:`` closes ``obj`` at the end of the block; subclasses define :meth:`close`."""

    def close(self) -> None:
        """Release what the object holds; closing twice must be harmless."""
        raise NotImplementedError

    def __enter__(self: ClosingType) -> ClosingType:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
