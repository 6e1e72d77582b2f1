"""Optional dependencies (the ``experiments`` extra: matplotlib, tqdm), imported on first use.

:func:`require` imports a module or raises :class:`MissingExtraError`, one message naming the
extra to install (the CLI prints it as one line). :func:`agg_figure` makes a
``matplotlib.figure.Figure`` bound to its own Agg canvas: plotting never calls
``matplotlib.use`` or ``pyplot``, so it leaves a notebook's backend and its figure list alone.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["MissingExtraError", "require", "agg_figure"]

# module -> (pip distribution name, extra of discretegrad that installs it)
_EXTRAS = {"matplotlib": ("matplotlib", "experiments"), "tqdm": ("tqdm", "experiments")}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message says which extra installs it."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (a key of the optional-dependency table) for ``purpose``."""
    dist, extra = _EXTRAS[module.partition(".")[0]]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"{purpose} needs {dist}, which is not installed: pip install 'discretegrad[{extra}]'"
        ) from None


def agg_figure(purpose: str, **kwargs: Any) -> Any:
    """A ``matplotlib.figure.Figure(**kwargs)`` drawn by its own Agg canvas (``fig.savefig`` works;
    nothing global changes)."""
    figure = require("matplotlib.figure", purpose)
    agg = require("matplotlib.backends.backend_agg", purpose)
    fig = figure.Figure(**kwargs)
    agg.FigureCanvasAgg(fig)
    return fig
