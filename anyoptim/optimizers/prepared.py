"""The step's fast path: what a validated step established, reused while a loop passes the same arrays.

A training loop passes the very same parameter, gradient and state arrays every
step (updated in place).  :class:`PreparedStep` remembers them with the engine's
bound plan; :meth:`PreparedStep.matches` is then the whole check of a later call.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from typing import Any

from ..engines.memory import byte_range
from ..state import OptimizerState
from .gathering import Checker, Gatherer, leaf_checker, leaf_gatherer

__all__ = ["PreparedStep"]


class PreparedStep:
    """What a validated step established about its arrays, for the steps that pass the same ones.

    Holds the leaves of params, grads and state slots, the shapes and dtypes of
    params and grads, the tree structure, and the engine's prepared runs.
    :meth:`matches` is the whole check of a later call: the same structure
    (exact container types), the very same leaf objects, unchanged shapes and
    dtypes (and addresses and contiguity, for the torch engine's runs), a state
    made by the same optimizer.  Anything else takes
    the fully validated path, or rebinds new gradients (:meth:`rebind`).  The
    check is a function generated for the trees' structure, which compares each
    leaf where it finds it
    (:func:`~anyoptim.optimizers.gathering.leaf_checker`); where it fails, a
    second one gathers the call's leaves
    (:func:`~anyoptim.optimizers.gathering.leaf_gatherer`).  Both are made
    when a call first may reuse the step.
    """

    __slots__ = (
        "addresses",
        "check",
        "contiguity",
        "contiguity_of",
        "data_ptr",
        "facts",
        "flagged",
        "flags",
        "g_leaves",
        "gather",
        "grads_in",
        "key_of_leaf",
        "keys",
        "layout",
        "leaves",
        "names",
        "owner",
        "params_out",
        "rebind_facts",
        "rebinders",
        "runs",
        "slot_names",
        "slots_out",
        "treedef",
        "xp",
    )

    def __init__(
        self, xp, names, treedef, p_leaves, g_leaves, slots, keys, key_of_leaf, runs, params_out, state_out, grads_in
    ):
        self.xp = xp
        self.names = names
        self.treedef = treedef
        self.slot_names = tuple(slots)
        self.gather: Gatherer | None = None  # compiled at the first call that may reuse this step
        self.check: Checker | None = None  # ditto
        self.g_leaves = list(g_leaves)
        # Every leaf in the order matches() gathers them: params, grads, then each slot.
        self.leaves = (*p_leaves, *g_leaves, *(leaf for values in slots.values() for leaf in values))
        self.layout = list(map(shape_and_dtype, (*p_leaves, *g_leaves)))
        # NumPy arrays: one made read-only since must take the validated path (new arrays); and code may set the
        # .strides of an existing array (deprecated, not gone), the element order the kernels pair.  Params and
        # slots are writeable here (else the step was not in place), a gradient as it was.
        self.flagged = [leaf for leaf in self.leaves if hasattr(getattr(leaf, "flags", None), "writeable")]
        self.flags = list(map(strides_and_writeable, self.flagged))
        self.keys = keys
        self.key_of_leaf = key_of_leaf
        everything = list(range(len(p_leaves)))
        # A prepared step is called with this step's scalars; update() does the same without building results.
        self.runs = [(getattr(run, "update", run), None if indices == everything else indices) for run, indices in runs]
        # Runs that read and write through views of the arrays' memory (the torch engine's) give the function that
        # reads an array's address: ``p.data = t`` between steps would leave them reading (or writing) the old
        # memory.  Every leaf's address, as matches() gathers them, is then compared at each call.
        readers = [run for run, _ in runs if hasattr(run, "address_of")]
        self.data_ptr = readers[0].address_of if readers else None
        self.addresses = list(map(self.data_ptr, self.leaves)) if readers else None
        # And the views pair elements by memory: their order only while a tensor keeps the strides it had (``p.data
        # = p.data.t()`` keeps a square tensor's address and shape).  Contiguous then, contiguous now, is that.
        self.contiguity_of = getattr(readers[0], "contiguity_of", None) if readers else None
        self.contiguity = list(map(self.contiguity_of, self.leaves)) if self.contiguity_of is not None else None
        # Runs that can read new gradient arrays (the torch engine's): a loop whose grads are new every step.
        rebinders = [(getattr(run, "with_grads", None), indices) for run, indices in runs]
        self.rebinders = rebinders if all(rebind is not None for rebind, _ in rebinders) else None
        self.rebind_facts: tuple[list[int], list[int], list[type], list[tuple]] | None = None  # at the first rebind
        self.facts: tuple | None = self.leaf_facts()  # what check() compares; None: this step never runs again
        self.params_out = params_out
        self.grads_in = grads_in  # the grads tree the step was given: step_again requires that very tree
        self.slots_out = state_out.slots
        self.owner = state_out.optimizer  # what a state must say of its maker for new gradients to be rebound

    def follows(self, params: Any, grads: Any, state: Any) -> bool:
        """Whether a call passes back the very params and slots the step returned, and the grads tree it was given."""
        if params is not self.params_out or state.slots is not self.slots_out or grads is not self.grads_in:
            return False
        if self.addresses is not None and list(map(self.data_ptr, self.leaves)) != self.addresses:
            return False
        return self.contiguity is None or list(map(self.contiguity_of, self.leaves)) == self.contiguity

    def matches(self, params: Any, grads: Any, state: Any) -> bool:
        """Whether a call passes exactly the arrays (and structures) this was made for; or new gradients it rebinds."""
        if type(state) is not OptimizerState or state.structure is not self.treedef or self.facts is None:
            return False
        made_by = state.optimizer  # another optimizer's state is refused by the validated path (None: made by hand)
        if made_by is not None and made_by != self.owner:
            return False
        check = self.check
        if check is None:
            check = self.check = leaf_checker(self.treedef, self.slot_names, self.data_ptr, self.contiguity_of)
        if not check(params, grads, state.slots, self.facts):
            # Not the very arrays: the same ones of another shape, dtype or memory, another structure, other
            # leaves.  Only new gradient arrays that the runs can read instead (rebind) let the step run.
            gather = self.gather
            if gather is None:
                gather = self.gather = leaf_gatherer(self.treedef, self.slot_names)
            found = gather(params, grads, state.slots)  # None for another structure
            if found is None or len(found) != len(self.leaves) or all(map(operator.is_, found, self.leaves)):
                return False
            if not (state.optimizer == self.owner and self.rebind(found, grads)):
                return False
            # NumPy lets code set .shape and .dtype of an existing array: check those of params and grads.
            if list(map(shape_and_dtype, found[: len(self.layout)])) != self.layout:
                return False
            if self.addresses is not None and list(map(self.data_ptr, found)) != self.addresses:
                return False
            if self.contiguity is not None and list(map(self.contiguity_of, found)) != self.contiguity:
                return False
        return not self.flagged or list(map(strides_and_writeable, self.flagged)) == self.flags

    def leaf_facts(self) -> tuple:
        """What :func:`~anyoptim.optimizers.gathering.leaf_checker`'s check compares, per tree: the leaves, their
        addresses and contiguity (where read), and for params and grads their shapes and dtypes."""
        count = len(self.g_leaves)
        facts = []
        for tree in range(len(self.leaves) // count if count else 2 + len(self.slot_names)):
            span = slice(tree * count, (tree + 1) * count)
            fact: list[tuple] = [tuple(self.leaves[span])]
            if self.addresses is not None:
                fact.append(tuple(self.addresses[span]))
            if self.contiguity is not None:
                fact.append(tuple(self.contiguity[span]))
            if tree < 2:
                fact += [tuple(shape for shape, _ in self.layout[span]), tuple(dtype for _, dtype in self.layout[span])]
            facts.append(tuple(fact))
        return tuple(facts)

    def rebind(self, found: tuple, grads: Any) -> bool:
        """Take new gradient arrays where only they changed, if the engine's runs can read them instead.

        ``found`` holds the call's leaves as :meth:`matches` gathers them.  The parameters and slots must be the
        very ones prepared; each new gradient an array of its old one's type, shape, dtype, device and layout,
        sharing no memory with a parameter or a slot (an aliased gradient takes the validated path, which
        copies it).  Then every run rebinds (``with_grads``) or the call takes the validated path; where some
        runs rebound before one refused, this step no longer matches any call (the validated path may return
        early, a skipped step, and leave it the optimizer's).
        """
        count = len(self.g_leaves)
        params = len(self.layout) - count
        if self.rebinders is None or not all(map(operator.is_, found[:params], self.leaves[:params])):
            return False
        if not all(map(operator.is_, found[params + count :], self.leaves[params + count :])):
            return False
        new = found[params : params + count]
        if self.rebind_facts is None:  # what a new gradient must share with its old one, and must not touch
            types, places = list(map(type, self.g_leaves)), list(map(placement, self.g_leaves))
            self.rebind_facts = (*written_ranges([*found[:params], *found[params + count :]]), types, places)
        starts, reach, types, places = self.rebind_facts
        if list(map(type, new)) != types or list(map(shape_and_dtype, new)) != self.layout[params:]:
            return False
        if list(map(placement, new)) != places:
            return False
        for g in new:  # a new gradient that may share memory with a parameter or a slot: the validated path
            bounds = byte_range(g)
            if bounds is not None and (below := bisect.bisect_left(starts, bounds[1])) and reach[below - 1] > bounds[0]:
                return False
        for position, (rebind, indices) in enumerate(self.rebinders):
            if not rebind(new if indices is None or len(indices) == count else [new[i] for i in indices]):
                if position:  # the runs before read the new gradients now: never run this step again
                    self.leaves, self.grads_in, self.rebinders, self.facts = (), None, None, None
                return False
        self.g_leaves = list(new)
        self.leaves = found
        span = slice(params, params + count)
        if self.addresses is not None:
            self.addresses[span] = map(self.data_ptr, new)
        if self.contiguity is not None:
            self.contiguity[span] = map(self.contiguity_of, new)
        self.grads_in = grads
        if self.facts is not None:  # the grads' facts: the new leaves, addresses, contiguity; same shapes, dtypes
            old = self.facts[1]
            addresses = () if self.addresses is None else (tuple(self.addresses[span]),)
            contiguity = () if self.contiguity is None else (tuple(self.contiguity[span]),)
            self.facts = (self.facts[0], (tuple(new), *addresses, *contiguity, *old[-2:]), *self.facts[2:])
        return True


shape_and_dtype = operator.attrgetter("shape", "dtype")


def placement(leaf: Any) -> tuple[Any, Any]:
    """Where an array lives and how it is laid out: its ``device`` and ``layout`` (torch's), None where it has none."""
    return getattr(leaf, "device", None), getattr(leaf, "layout", None)


strides_and_writeable = operator.attrgetter("strides", "flags.writeable")


def written_ranges(leaves: list[Any]) -> tuple[list[int], list[int]]:
    """The byte ranges of ``leaves``: their starts, sorted, and the furthest end reached by each prefix of them.

    A range ``[a, b)`` meets one of them exactly when, with ``k`` the count of starts below ``b``, ``k > 0``
    and the furthest end among those ``k`` is beyond ``a``.
    """
    ranges = sorted(found for leaf in leaves if (found := byte_range(leaf)) is not None)
    return [start for start, _ in ranges], list(itertools.accumulate((end for _, end in ranges), max))
