"""Importing TVM's tensor-intrinsic tables without ``inspect.stack()``'s cost.

Each table is a module of TVMScript functions (about 500 in all, CUDA's the most), and each function's decorator
calls ``inspect.stack()``, which reads the source line of every frame and, for a frame whose file does not
exist (the import machinery's frozen frames), looks its module up in all of ``sys.modules``. Under pytest, with
PyTorch and pandas loaded, importing the tables that way took 117 s on a 2-core Zen 3. :func:`import_table`
imports one under :func:`shallow_stack`, which reads the one source line TVMScript looks at.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
from collections.abc import Iterator
from types import FrameType, ModuleType

#: The one outer frame of a decorator whose source line is read: TVMScript's ``is_defined_in_class`` reads
#: frame 2's (the line that applied the decorator) to tell a class body; while a table is imported nothing
#: reads the others' lines.
CLASS_FRAME = 2


def _frame_info(frame: FrameType, context: int) -> inspect.FrameInfo:
    """As ``inspect.stack`` gives it; with no context, from the frame alone (``getframeinfo`` would look up the
    module of a frame whose file does not exist in all of ``sys.modules``)."""
    if context:
        info = inspect.getframeinfo(frame, context)
        return inspect.FrameInfo(frame, *info, positions=info.positions)
    return inspect.FrameInfo(frame, frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name, None, None)


@contextlib.contextmanager
def shallow_stack() -> Iterator[None]:
    """``inspect.stack`` with the source line of frame :data:`CLASS_FRAME` only, for a while."""
    deep = inspect.stack

    def stack(context: int = 1) -> list[inspect.FrameInfo]:
        frames, frame = [], sys._getframe(1)
        while frame is not None:
            frames.append(_frame_info(frame, context if len(frames) == CLASS_FRAME else 0))
            frame = frame.f_back
        return frames

    inspect.stack = stack
    try:
        yield
    finally:
        inspect.stack = deep


def import_table(name: str) -> ModuleType:
    """``importlib.import_module(name)`` under :func:`shallow_stack`; the module as it is once imported."""
    if name in sys.modules:
        return sys.modules[name]
    with shallow_stack():
        return importlib.import_module(name)


__all__ = ["CLASS_FRAME", "import_table", "shallow_stack"]
