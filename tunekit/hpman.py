"""hpman declarations as search spaces, and trial-scoped values for hpman-declared code.

hpman users declare hyperparameters where they are used: ``lr = _('learning_rate', 1e-3, range=[1e-3, 1.0],
scale='log')``. The keyword arguments are *hints*; hpman stores them per occurrence when it parses the source
(``_.parse_file(path)``). This module reads them once (:func:`hinted_declarations`) and offers two views:

- :func:`hpng` -> the nevergrad parametrization of the hpnevergrad seed (an ``ng.p.Instrumentation`` of named
  parameters, so ``recommendation.kwargs`` works), for :class:`tunekit.searchers.NevergradSearch`;
- :func:`space_from_hpman` -> a :class:`tunekit.Space`, so every tunekit searcher (GP-EI too) can tune it.

Hints read (any other keyword raises, except ``help`` and ``required``, which hpargparse reads):

============================  ========================================================================
``choices=[...]``             ``ng.p.Choice`` (``transitions=True``: ``ng.p.TransitionChoice``)
``range=[lo, hi]``            bounds; ``scale='log'`` -> ``ng.p.Log``, otherwise ``ng.p.Scalar``
``method=``, ``full_range_sampling=``   passed to ``set_bounds`` (need ``range``)
int default                   integer casting (``set_integer_casting=True`` forces it, ``False`` disables)
list default                  ``ng.p.Array``
``sigma=``, ``exponent=``     ``set_mutation`` (``exponent`` of a log scale is ``ng.p.Log``'s exponent)
``custom='gaussian'|'cauchy'``  gaussian: nevergrad's default mutation; cauchy: ``ng.ops.mutations.Cauchy``
============================  ========================================================================

Only declarations with at least one search hint are searched; the others keep their defaults. A bounded
parameter starts, as in the seed's "is equivalent to" block, at nevergrad's own initial value (middle of the
range, geometric middle for log); an unbounded one starts at its declared default.

Trial-scoped values: :func:`injected_values` gives a trial its values through hpman's own ``set_values`` on a
tree private to the current thread/context, so trials sharing a worker process never see each other's values.

nevergrad is imported only where a parametrization is built, so that ``Space.from_hpman`` stays light.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
import warnings
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Iterator, Mapping, Optional, Sequence

from hpman import HyperParameterManager, HyperParamTree, NotLiteralEvaluable

from tunekit.parameters import _is_finite
from tunekit.space import Categorical, Float, Int, Ordinal, Space

SEARCH_HINTS = frozenset({"choices", "transitions", "range", "scale", "method", "full_range_sampling",
                          "set_integer_casting", "sigma", "exponent", "custom"})
ARGPARSE_HINTS = frozenset({"help", "required"})
BOUND_METHODS = ("bouncing", "clipping", "constraint", "arctan", "tanh")
SCALES = ("linear", "log")
CUSTOM_MUTATIONS = ("gaussian", "cauchy")
NUMERIC_ONLY_HINTS = ("range", "scale", "method", "full_range_sampling", "set_integer_casting", "sigma",
                      "exponent", "custom")


@dataclass(frozen=True)
class Declaration:
    """One searched hyperparameter: its hpman name, its current value (the default) and its search hints."""

    name: str
    default: Any
    hints: dict

    @property
    def is_array(self) -> bool:
        return isinstance(self.default, (list, tuple))

    @property
    def is_integer(self) -> bool:
        """Integer casting: forced or disabled by ``set_integer_casting``, else implied by an int default."""
        forced = self.hints.get("set_integer_casting")
        if forced is not None:
            return forced
        values = self.default if self.is_array else [self.default]
        return all(isinstance(v, Integral) and not isinstance(v, bool) for v in values)

    @property
    def bounds(self) -> tuple[Optional[float], Optional[float]]:
        low, high = self.hints.get("range", (None, None))
        return low, high


def _error(name: str, hint: str, value: Any, reason: str) -> ValueError:
    return ValueError(f"hpman hyperparameter {name!r}: hint {hint}={value!r} {reason}")


def _merged_hints(node: Any) -> dict:
    """The hints of every occurrence of one hyperparameter; the same key with two values is contradictory."""
    merged: dict = {}
    for occurrence in node.db:
        for key, value in (occurrence.hints or {}).items():
            if key in merged and merged[key] != value:
                raise _error(node.name, key, value, f"contradicts {key}={merged[key]!r} at another occurrence")
            merged[key] = value
    return merged


def _check_choices(name: str, default: Any, hints: dict) -> None:
    choices = hints["choices"]
    if not isinstance(choices, (list, tuple)) or not choices:
        raise _error(name, "choices", choices, "must be a non-empty list")
    clashing = [key for key in NUMERIC_ONLY_HINTS if key in hints]
    if clashing:
        raise _error(name, clashing[0], hints[clashing[0]], "contradicts choices= (a choice has no range or mutation)")
    if default not in choices:
        raise _error(name, "choices", choices, f"does not contain the default {default!r}")


def _check_range(name: str, decl: Declaration) -> None:
    hints = decl.hints
    bounds = hints["range"]
    if (not isinstance(bounds, (list, tuple)) or len(bounds) != 2 or not all(map(_is_finite, bounds))
            or not bounds[0] < bounds[1]):
        raise _error(name, "range", bounds, "must be [low, high] with finite numbers low < high")
    values = decl.default if decl.is_array else [decl.default]
    outside = [v for v in values if not bounds[0] <= v <= bounds[1]]
    if outside:
        raise _error(name, "range", list(bounds), f"does not contain the default {decl.default!r}")
    if hints.get("scale") == "log" and bounds[0] <= 0:
        raise _error(name, "scale", "log", f"needs a positive range, got range={list(bounds)!r}")


def _check_numeric(decl: Declaration) -> None:
    name, hints = decl.name, decl.hints
    values = decl.default if decl.is_array else [decl.default]
    if not values or not all(map(_is_finite, values)):
        hint = next(key for key in NUMERIC_ONLY_HINTS if key in hints)
        raise _error(name, hint, hints[hint],
                     f"needs a finite number or a list of them as default, got {decl.default!r}")
    scale = hints.get("scale", "linear")
    if scale not in SCALES:
        raise _error(name, "scale", scale, f"is not one of {SCALES}")
    if scale == "log" and decl.is_array:
        raise _error(name, "scale", scale, "is supported for single numbers only, not list defaults")
    if scale == "log" and decl.default <= 0:
        raise _error(name, "scale", scale, f"needs a positive default, got {decl.default!r}")
    if "range" in hints:
        _check_range(name, decl)
    for key in ("method", "full_range_sampling"):
        if key in hints and "range" not in hints:
            raise _error(name, key, hints[key], "needs range=[low, high]")
    if hints.get("method", "bouncing") not in BOUND_METHODS:
        raise _error(name, "method", hints["method"], f"is not one of {BOUND_METHODS}")
    for key in ("sigma", "exponent"):
        if key in hints and not (_is_finite(hints[key]) and hints[key] > 0):
            raise _error(name, key, hints[key], "must be a finite positive number")
    if hints.get("custom", "gaussian") not in CUSTOM_MUTATIONS:
        raise _error(name, "custom", hints["custom"], f"is not one of {CUSTOM_MUTATIONS}")


def _declaration(node: Any) -> Optional[Declaration]:
    """The checked declaration of one hpman node, or None when it carries no search hint."""
    name = node.get().name
    hints = _merged_hints(node)
    unknown = sorted(set(hints) - SEARCH_HINTS - ARGPARSE_HINTS)
    if unknown:
        raise _error(name, unknown[0], hints[unknown[0]],
                     f"is not a known hint; accepted: {sorted(SEARCH_HINTS | ARGPARSE_HINTS)}")
    search = {key: value for key, value in hints.items() if key in SEARCH_HINTS}
    if not search:
        return None
    default = node.value
    if isinstance(default, NotLiteralEvaluable):
        raise _error(name, sorted(search)[0], search[sorted(search)[0]], "needs a literal default value")
    for key in ("transitions", "full_range_sampling", "set_integer_casting"):
        if key in search and not isinstance(search[key], bool):
            raise _error(name, key, search[key], "must be True or False")
    if "transitions" in search and "choices" not in search:
        raise _error(name, "transitions", search["transitions"], "needs choices=[...]")
    decl = Declaration(name=name, default=default, hints=search)
    if "choices" in search:
        _check_choices(name, default, search)
    else:
        _check_numeric(decl)
    return decl


def hinted_declarations(manager: HyperParameterManager) -> list[Declaration]:
    """The searched hyperparameters of ``manager`` (those with search hints), checked, in hpman's order.

    Raises a ValueError naming the hyperparameter and the hint for an unknown hint key or contradictory hints.
    """
    if not isinstance(manager, HyperParameterManager):
        raise TypeError(f"expected an hpman HyperParameterManager (e.g. `from hpman.m import _`), got {manager!r}")
    declarations = [_declaration(node) for node in manager.get_nodes()]
    return [decl for decl in declarations if decl is not None]


def _bounded_data(decl: Declaration) -> Any:
    """A bounded nevergrad Scalar/Log/Array for ``decl`` (its hints include ``range``)."""
    import nevergrad as ng

    hints, (low, high) = decl.hints, decl.bounds
    log = hints.get("scale") == "log"
    if "method" not in hints and "full_range_sampling" not in hints:
        if decl.is_array:
            return ng.p.Array(shape=(len(decl.default),), lower=low, upper=high)
        if log:
            return ng.p.Log(lower=low, upper=high, exponent=hints.get("exponent"))
        return ng.p.Scalar(lower=low, upper=high)
    # set_bounds may be called once only, so build the unbounded parameter the constructor would have built.
    middle = math.sqrt(low * high) if log else (low + high) / 2
    param = ng.p.Array(init=[middle] * len(decl.default)) if decl.is_array else ng.p.Scalar(init=middle)
    if not log:
        param.set_mutation(sigma=(high - low) / 6.0)
    with warnings.catch_warnings():
        # a log scale's bounds are checked against sigma before the exponent below rescales them: not a problem
        warnings.simplefilter("ignore", ng.errors.NevergradRuntimeWarning)
        param.set_bounds(low, high, method=hints.get("method", "bouncing"),
                         full_range_sampling=hints.get("full_range_sampling"))
    if log:
        param.set_mutation(exponent=hints.get("exponent", math.exp(math.log(high / low) / 6.0)))
    return param


def _nevergrad_parameter(decl: Declaration) -> Any:
    """The nevergrad parameter of one declaration, following the hint table of the module docstring."""
    import nevergrad as ng

    hints = decl.hints
    if "choices" in hints:
        kind = ng.p.TransitionChoice if hints.get("transitions") else ng.p.Choice
        return kind(list(hints["choices"]))
    log = hints.get("scale") == "log"
    if "range" in hints:
        param = _bounded_data(decl)
    elif decl.is_array:
        param = ng.p.Array(init=list(decl.default))
    elif log:
        param = ng.p.Log(init=decl.default, exponent=hints.get("exponent"))
    else:
        param = ng.p.Scalar(init=decl.default)
    if decl.is_integer:
        param.set_integer_casting()
    if "sigma" in hints:
        param.set_mutation(sigma=hints["sigma"])
    if "exponent" in hints and not log:
        param.set_mutation(exponent=hints["exponent"])
    if hints.get("custom") == "cauchy":
        param = ng.ops.mutations.Cauchy()(param)
    return param


def hpng(manager: HyperParameterManager) -> Any:
    """The nevergrad parametrization of ``manager``'s hinted declarations (hpnevergrad's ``hpng(_)``).

    Returns an ``ng.p.Instrumentation`` with one named parameter per searched hyperparameter, so that
    ``optimizer.minimize(f).kwargs`` holds the values to ``_.set_values`` or pass to ``f(**kwargs)``.
    """
    import nevergrad as ng

    return ng.p.Instrumentation(**{decl.name: _nevergrad_parameter(decl) for decl in hinted_declarations(manager)})


def _space_parameter(decl: Declaration) -> Any:
    hints = decl.hints
    if "choices" in hints:
        kind = Ordinal if hints.get("transitions") else Categorical
        return kind(decl.name, tuple(hints["choices"]), default=decl.default)
    if decl.is_array or "range" not in hints:
        what = "a list default (an array)" if decl.is_array else "no range=[low, high]"
        raise ValueError(
            f"hpman hyperparameter {decl.name!r} has {what}, which a tunekit Space cannot hold; "
            f"tune it with NevergradSearch(space=hpng(_)) or declare range=[low, high] with a number default")
    low, high = decl.bounds
    log = hints.get("scale") == "log"
    if decl.is_integer:
        return Int(decl.name, math.ceil(low), math.floor(high), log=log, default=int(round(decl.default)))
    return Float(decl.name, float(low), float(high), log=log, default=float(decl.default))


def space_from_hpman(manager: HyperParameterManager) -> Space:
    """A :class:`tunekit.Space` of ``manager``'s hinted declarations (nevergrad-only hints such as ``sigma``
    are ignored; array and unbounded numbers are refused with an error naming them)."""
    return Space([_space_parameter(decl) for decl in hinted_declarations(manager)])


class _ScopedTree:
    """Stands in for ``manager.tree``: hpman's every read and write goes through ``manager.tree``, so routing
    it to the tree of the current context (a ContextVar) scopes values to one trial; outside any trial it is
    the manager's shared tree. Pickles as its shared tree's proxy (a ContextVar cannot be pickled)."""

    def __init__(self, shared: HyperParamTree):
        self._shared = shared
        self._current: contextvars.ContextVar = contextvars.ContextVar("tunekit_hpman_tree", default=None)

    def _tree(self) -> HyperParamTree:
        tree = self._current.get()
        return self._shared if tree is None else tree

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_shared", "_current"):
            raise AttributeError(name)
        return getattr(self._tree(), name)

    def __setitem__(self, key: str, value: Any) -> None:
        self._tree()[key] = value

    def __getstate__(self) -> dict:
        return {"shared": self._shared}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["shared"])


_INSTALL_LOCK = threading.Lock()


def _scoped_tree(manager: HyperParameterManager) -> _ScopedTree:
    with _INSTALL_LOCK:
        if not isinstance(manager.tree, _ScopedTree):
            manager.tree = _ScopedTree(manager.tree)
        return manager.tree


def _give_setter_occurrences_hints(manager: HyperParameterManager, names: Sequence[str]) -> None:
    """hpman leaves ``hints=None`` on occurrences made by ``set_values``; hpargparse 0.14 reads the hints of
    every occurrence when it binds and fails on None, so these get empty hints."""
    for name in names:
        occurrence = manager.get_occurrence(name)
        if occurrence is not None and occurrence.hints is None:
            occurrence.hints = {}


@contextlib.contextmanager
def injected_values(manager: HyperParameterManager, values: Mapping[str, Any],
                    sources: Sequence[tuple[str, str]] = ()) -> Iterator[HyperParameterManager]:
    """Within the block, ``manager`` answers from a fresh tree holding ``values`` (set with hpman's
    ``set_values``, the highest priority) on top of the declarations parsed from ``sources``
    (``(filename, source_text)`` pairs).

    The tree belongs to the current thread/context only: a concurrent trial in another thread, and the code
    after the block, see their own values. Threads started inside the block do not inherit it (run them with
    ``contextvars.copy_context().run`` to share it).
    """
    scoped = _scoped_tree(manager)
    token = scoped._current.set(HyperParamTree(separator=scoped._shared.sep))
    try:
        for filename, text in sources:
            manager.parse_source(text, filename)
        manager.set_values(dict(values))
        _give_setter_occurrences_hints(manager, values)
        yield manager
    finally:
        scoped._current.reset(token)
