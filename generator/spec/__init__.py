"""What a spec file imports: ``from generator.spec import *`` in ``specs/<loss>.py``.

The vocabulary (declarations, row reductions, the Loss itself) lives in
``vocabulary``, the numerically stable functions in ``functions``; ``load``
runs spec files, ``validate`` checks a formula, ``terms`` handles named terms.
"""

from .recurrence import Alignment  # noqa: F401
from .vocabulary import *  # noqa: F401,F403 (the vocabulary is this package's public face)
from .vocabulary import __all__ as _vocabulary

__all__ = [*_vocabulary, "Alignment"]
