"""Layer 2, the schedule families. Each module registers its variants into :mod:`matmul.core.registry`
on import; the registry never imports a family.

A new family is one new module here plus one import line below; nothing in ``bench/``, the report or the
CLI needs to change (``Variant.available`` says when a family cannot serve a case, and why).
"""

# Registration order is the order `variants` lists them and `--variants all` runs them.
from . import manual  # noqa: F401, I001
from . import rules  # noqa: F401
from . import metaschedule  # noqa: F401
from . import ml  # noqa: F401
from . import cuda  # noqa: F401

__all__ = ["cuda", "manual", "metaschedule", "ml", "rules"]
