"""The torch engine: torch tensors updated in place, by the fused engines through zero-copy views.

torch has no engine of its own: a CPU tensor is the same memory as a NumPy
array and a CUDA tensor the same as a CuPy array, so the NumPy engine's
compiled loop and the CuPy engine's kernel can write into torch storage
directly.  :class:`TorchEngine` sorts a step's leaves three ways:

* **host**: CPU, dense (strided), C-contiguous float32/float64 tensors in every
  column (parameter, gradient, each slot).  They become NumPy views of their
  storage (one view of a whole storage per storage, sliced, so leaves laid back
  to back by :func:`anyoptim.flatten` or :meth:`TorchEngine.init_slots` stay one
  span) and run on the NumPy engine;
* **device**: the same on a CUDA device, when CuPy is at hand and torch's
  current stream is the default one (CuPy launches on its own current stream,
  which is then the same legacy default stream): CuPy views (DLPack) run on the
  CuPy engine;
* **generic**: everything else (bfloat16 and float16, strided views, other
  devices, ``engine="generic"``): the rule runs with torch's own operations
  under :func:`torch.no_grad`, and the results are copied back into the given
  tensors.

Either way every leaf is updated in place, outside autograd: the parameters
keep their identity, a ``torch.nn.Parameter`` stays a leaf (``is_leaf``), no
graph is recorded, and each written tensor's version counter is bumped, as an
in-place torch operation would, so a graph that saved the old values refuses to
run backward.

The fused engines are handed in by :func:`anyoptim.engines.select_engine` (this
module imports neither), as the one engine of each library per process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._namespace import array_namespace
from .fused import FusedEngine
from .generic import GenericEngine
from .program import Program
from .spans import leaves_by_dtype
from .torch_tensors import (
    StorageViews,
    hp_views,
    one_per_version_counter,
    share_one_counter,
    torch_module,
    unwritable,
    viewable,
)

__all__ = ["TorchEngine", "TorchStep"]

_GENERIC = GenericEngine()


class TorchStep:
    """One prepared step over fixed torch tensors: a :class:`~anyoptim.engines.PreparedRun`, always in place.

    What :meth:`TorchEngine.prepare` returns.  The leaves are split into the
    parts described in :mod:`anyoptim.engines.torch_bridge` (host views, device
    views, the rule with torch); a call runs every part with its leaves' scalars.

    Parameters
    ----------
    engine : TorchEngine
        The engine that prepares it (its fused engines and choice).
    program, xp, params, grads, slots, hps
        As for :meth:`anyoptim.engines.PreparingEngine.prepare`, on torch tensors.

    Attributes
    ----------
    in_place : bool
        Always True: every leaf's results are written into the given tensors.
    parts : dict of str to list of int
        Leaf indices by how they run: ``"host"``, ``"device"``, ``"generic"``.
    address_of : callable
        ``torch.Tensor.data_ptr``: the runs read and write the tensors through views of the memory they had when
        prepared, so a caller that reuses this step compares every tensor's address with it (``p.data = t`` gives a
        tensor other memory, and then needs a new preparation).
    contiguity_of : callable
        ``torch.Tensor.is_contiguous``: the views pair elements by memory, so that caller also compares whether each
        tensor is contiguous with what it was (``p.data = p.data.t()`` of a square tensor keeps its address and
        shape, not its order).
    """

    in_place = True

    def __init__(
        self,
        engine: TorchEngine,
        program: Program,
        xp: Any,
        params: Sequence[Any],
        grads: Sequence[Any],
        slots: Mapping[str, Sequence[Any]],
        hps: Sequence[Mapping[str, Any]],
    ):
        self.engine = engine
        self.params = list(params)
        self.slots = {name: list(values) for name, values in slots.items()}
        columns = [self.params, list(grads), *self.slots.values()]
        count = len(self.params)
        for what, column in [("params", self.params), *((f"state slot {n!r}", v) for n, v in self.slots.items())]:
            for i, tensor in enumerate(column):  # refused here, before any part of any program runs
                problem = unwritable(tensor)
                if problem is not None:
                    raise ValueError(f"{what} leaf {i} is {problem}")
        self.parts: dict[str, list[int]] = {"host": [], "device": [], "generic": []}
        device: Any = None
        host = engine.host_engine() if engine.fused else None
        for i in range(count):
            if host is not None and all(viewable(column[i], "cpu") for column in columns):
                self.parts["host"].append(i)
                continue
            if engine.fused and all(viewable(column[i], engine.device_type) for column in columns):
                if device is None:
                    device = engine.device_engine() or False
                if device and engine.on_default_stream():
                    self.parts["device"].append(i)
                    continue
            self.parts["generic"].append(i)
        self.runs: list[Callable[[Sequence[Mapping[str, Any]]], None]] = []
        self.host_step: Any = None
        self.host_params: list[Any] = []
        self.generic_grads: list[Any] = []
        self.gradient_leaves: Any = None  # per host runner, each span's leaf (False: spans of several leaves)
        tensor_hps = any(isinstance(v, torch_module().Tensor) for hp in hps for v in hp.values())
        if self.parts["host"]:
            host_views = (host, StorageViews(lambda tensor: tensor.numpy()))
            self.runs.append(self._fused(host_views, "host", program, xp, columns, hps, tensor_hps))
        if self.parts["device"]:
            device_views = (device[0], StorageViews(device[1]))
            self.runs.append(self._fused(device_views, "device", program, xp, columns, hps, tensor_hps))
        if self.parts["generic"]:
            self.runs.append(self._generic(program, xp, columns, self.parts["generic"]))
        # Written outside torch's own in-place operations: bump the versions as those would.
        fused = self.parts["host"] + self.parts["device"]
        written = [column[i] for column in (self.params, *self.slots.values()) for i in fused]
        self.written = one_per_version_counter(written)  # views of one buffer share its counter: one bump each
        self.bump = torch_module().autograd.graph.increment_version if self.written else None
        # The views hold the memory the tensors had: ``p.data = t`` (vector_to_parameters, share_memory()) gives
        # a tensor other memory, and the step must be prepared again, else it reads and writes the old memory.
        self.address_of = torch_module().Tensor.data_ptr  # unbound: half a methodcaller's time per tensor
        # And in the order they had then: ``p.data = p.data.t()`` keeps a square tensor's address and shape.
        self.contiguity_of = torch_module().Tensor.is_contiguous
        if len(self.runs) == 1 and self.bump is not None:  # the usual case, one fused part: one call less per step
            run, bump, written = self.runs[0], self.bump, self.written

            def update(hps: Sequence[Mapping[str, Any]]) -> None:
                run(hps)
                bump(written)

            self.update = update

    def _fused(
        self,
        fused: tuple[Any, StorageViews],
        part: str,
        program: Program,
        xp: Any,
        columns: list[list[Any]],
        hps: Sequence[Mapping[str, Any]],
        tensor_hps: bool,
    ) -> Callable[[Sequence[Mapping[str, Any]]], None]:
        """Prepare a fused engine on views of this part's leaves; the run takes every leaf's ``hps``."""
        engine, view = fused
        indices = self.parts[part]
        every = len(indices) == len(self.params)
        views = [[view(column[i]) for i in indices] for column in columns]
        pick = (lambda hps: hps) if every else (lambda hps: [hps[i] for i in indices])
        # A tensor scalar (the clip factor) is a new tensor each step: viewed on its own, not kept by ``view``'s cache
        hps_of = (lambda hps: hp_views(pick(hps), view.view)) if tensor_hps else pick
        step = engine.prepare(
            program,
            array_namespace(views[0][0]),
            views[0],
            views[1],
            dict(zip(self.slots, views[2:], strict=True)),
            hps_of(hps),
        )
        if not step.in_place:  # not expected for contiguous views; refuse rather than lose results
            raise RuntimeError(f"the {engine.name} engine cannot update these torch tensors in place")
        if part == "host":
            self.host_step, self.host_params = step, views[0]
        update = step.update
        if part == "device":
            on_default_stream = self.engine.on_default_stream
            fallback = self._generic(program, xp, columns, indices)

            def run_on_device(hps: Sequence[Mapping[str, Any]]) -> None:
                # CuPy launches on the legacy default stream: right only while torch's current stream is it too.
                if on_default_stream():
                    update(hps_of(hps))
                else:
                    fallback(hps)

            return run_on_device
        return update if every and not tensor_hps else (lambda hps: update(hps_of(hps)))

    def _generic(
        self, program: Program, xp: Any, columns: list[list[Any]], indices: list[int]
    ) -> Callable[[Sequence[Mapping[str, Any]]], None]:
        """The rule with torch's operations, outside autograd, its results copied into the given tensors."""
        torch = torch_module()
        every = len(indices) == len(self.params)
        p, g = [columns[0][i] for i in indices], [columns[1][i] for i in indices]
        slots = {name: [values[i] for i in indices] for name, values in self.slots.items()}
        if indices is self.parts["generic"]:
            self.generic_grads = g  # the very list the run reads: with_grads refills it

        def run_generic(hps: Sequence[Mapping[str, Any]]) -> None:
            with torch.no_grad():
                new_p, new_slots = _GENERIC.apply(program, xp, p, g, slots, hps if every else [hps[i] for i in indices])
                for old, new in zip(p, new_p, strict=True):
                    old.copy_(new)
                for name, values in new_slots.items():
                    for old, new in zip(slots[name], values, strict=True):
                        old.copy_(new)

        return run_generic

    def with_grads(self, grads: Sequence[Any]) -> bool:
        """Read new gradient tensors from now on, in place of the prepared ones, where that is cheap.

        What a loop whose ``zero_grad()`` drops the gradients needs: ``backward()`` makes new tensors each
        step.  The host part's compiled kernels are pointed at views of the new tensors (each leaf its own
        span); the rule run with torch reads them directly.  The caller has checked that they are tensors of
        the old ones' shapes, dtypes, devices and layout that share no memory with the parameters or state.

        Parameters
        ----------
        grads : sequence of torch.Tensor
            The new gradients, one per leaf.

        Returns
        -------
        bool
            Whether they were bound; False (nothing changed) with device leaves, with spans of several
            leaves or kernels that are not compiled, or for gradients no view can be made of: the caller
            then prepares a new step.
        """
        if self.parts["device"] or len(grads) != len(self.params):
            return False
        host = self.parts["host"]
        if host:
            if self.gradient_leaves is None:
                from .numpy.runners import gradient_leaves  # the compiled runners' seam for new gradients

                self.gradient_leaves = gradient_leaves(self.host_step.runners, self.host_params) or False
            if self.gradient_leaves is False:
                return False
            for i in host:  # what the kernel trusts: dense, contiguous, aligned, of the dtype (the caller: shape)
                g = grads[i]
                if not viewable(g, "cpu") or g.data_ptr() % g.element_size():
                    return False
            for runner, leaves in zip(self.host_step.runners, self.gradient_leaves, strict=True):
                tensors = [grads[host[j]] for j in leaves]
                runner.set_gradient_addresses([g.data_ptr() for g in tensors], tensors)
        self.generic_grads[:] = [grads[i] for i in self.parts["generic"]]
        return True

    def update(self, hps: Sequence[Mapping[str, Any]]) -> None:
        """Run one step in place: ``hps`` is one mapping per leaf, grouped as when prepared."""
        for run in self.runs:
            run(hps)
        if self.bump is not None:
            self.bump(self.written)

    def __call__(self, hps: Sequence[Mapping[str, Any]]) -> tuple[list[Any], dict[str, list[Any]]]:
        """Run one step; return the given tensors (updated in place), as :meth:`anyoptim.engines.Engine.apply`."""
        self.update(hps)
        return list(self.params), {name: list(values) for name, values in self.slots.items()}


class TorchEngine(FusedEngine):
    """Update torch tensors in place, outside autograd: through the fused engines where a view is possible.

    An :class:`~anyoptim.engines.PreparingEngine` (:mod:`anyoptim.engines.torch_bridge`
    says how leaves are sorted).  ``engine="auto"`` and ``"fused"`` give torch
    tensors the fused one, ``engine="generic"`` the one that always runs the
    rule with torch's operations; both write in place.

    Parameters
    ----------
    host : callable, optional
        ``host() -> engine``: the NumPy engine CPU tensors run on, asked at
        each prepare (None: every CPU leaf runs the rule with torch).
    device : callable, optional
        ``device() -> (engine, view) or None``: the CuPy engine and the function
        that makes a CuPy view of a CUDA tensor, or None where CuPy is missing.
    fused : bool, default True
        False: never use the fused engines (``engine="generic"``).

    Attributes
    ----------
    name : str
        ``"torch"``: it runs torch tensors only.
    fused : bool
        As given.

    See Also
    --------
    anyoptim.engines.select_engine : Makes the process's two torch engines.

    Examples
    --------
    >>> import torch, anyoptim
    >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    >>> opt = anyoptim.SGD(0.1)
    >>> params, state = opt.step({"w": w}, {"w": torch.tensor([0.5, -1.0])}, opt.init({"w": w}))
    >>> params["w"] is w, w.is_leaf, w.detach()
    (True, True, tensor([ 0.9500, -1.9000]))
    """

    name = "torch"
    #: The torch device type whose tensors go to ``device()``'s engine.
    device_type = "cuda"

    def __init__(
        self,
        host: Callable[[], Any] | None = None,
        device: Callable[[], tuple[Any, Callable[[Any], Any]] | None] | None = None,
        *,
        fused: bool = True,
    ):
        self.host = host
        self.device = device
        self.fused = fused

    def init_slots(self, xp: Any, leaves: Sequence[Any], fills: Mapping[str, float]) -> dict[str, list[Any]]:
        """Make slots as views of one flat buffer per slot and dtype, which hold one version counter each.

        :meth:`anyoptim.engines.fused.FusedEngine.init_slots`, and each buffer's views recorded as sharing its
        counter (:func:`~anyoptim.engines.torch_tensors.share_one_counter`): a step that writes them bumps one
        view per buffer.

        Parameters
        ----------
        xp : namespace
            The Array API namespace of ``leaves``.
        leaves : sequence of torch.Tensor
            The parameters.
        fills : mapping of str to float
            Slot name -> the value its elements start at.

        Returns
        -------
        dict of str to list of torch.Tensor
            Slot name -> one tensor per leaf, shaped and typed like it.

        Examples
        --------
        >>> import torch
        >>> import array_api_compat.torch as xp
        >>> from anyoptim.engines.torch_bridge import TorchEngine
        >>> slots = TorchEngine().init_slots(xp, [torch.zeros(2), torch.zeros(3)], {"m": 0.0})
        >>> [m.shape for m in slots["m"]]
        [torch.Size([2]), torch.Size([3])]
        """
        slots = super().init_slots(xp, leaves, fills)
        for views in slots.values():
            for indices in leaves_by_dtype(views):  # flat_views makes one buffer per dtype, in these groups
                share_one_counter([views[i] for i in indices])
        return slots

    def host_engine(self) -> Any:
        """Get the engine CPU tensors' views run on.

        Returns
        -------
        engine or None
            What ``host()`` returns, or None without ``host``.

        Examples
        --------
        >>> from anyoptim.engines.torch_bridge import TorchEngine
        >>> print(TorchEngine().host_engine())
        None
        """
        return None if self.host is None else self.host()

    def device_engine(self) -> tuple[Any, Callable[[Any], Any]] | None:
        """Get the engine CUDA tensors' views run on, with the function that makes those views.

        Returns
        -------
        (engine, view) or None
            What ``device()`` returns; None without it (or without CuPy).

        Examples
        --------
        >>> from anyoptim.engines.torch_bridge import TorchEngine
        >>> print(TorchEngine().device_engine())
        None
        """
        return None if self.device is None else self.device()

    def on_default_stream(self) -> bool:
        """Tell whether torch's current CUDA stream is the default one, which CuPy's kernels launch on.

        Returns
        -------
        bool
            True when a CUDA step may run on the CuPy engine now; otherwise the
            step's CUDA leaves run the rule with torch (on torch's stream).

        Examples
        --------
        >>> import torch
        >>> from anyoptim.engines.torch_bridge import TorchEngine
        >>> TorchEngine().on_default_stream() if torch.cuda.is_available() else True
        True
        """
        return torch_module().cuda.current_stream().cuda_stream == 0

    def prepare(
        self,
        program: Program,
        xp: Any,
        params: Sequence[Any],
        grads: Sequence[Any],
        slots: Mapping[str, Sequence[Any]],
        hps: Sequence[Mapping[str, Any]],
    ) -> TorchStep:
        """Bind ``program`` to these very tensors: :meth:`anyoptim.engines.PreparingEngine.prepare`.

        Parameters
        ----------
        program : Program
            The step to run.
        xp : namespace
            The tensors' Array API namespace (``array_api_compat.torch``).
        params, grads : sequence of torch.Tensor
            One parameter and its gradient per leaf (gradients are only read).
        slots : mapping of str to sequence of torch.Tensor
            Each slot's tensors, one per leaf.
        hps : sequence of mapping of str to scalar
            Each leaf's scalars, in the grouping every later call keeps.

        Returns
        -------
        TorchStep
            Each call runs a step, writing every leaf in place.

        Examples
        --------
        >>> import torch
        >>> import array_api_compat.torch as xp
        >>> from anyoptim.engines.program import Program
        >>> from anyoptim.engines.torch_bridge import TorchEngine
        >>> sgd = lambda xp, p, g, slots, hp: (p - hp["learning_rate"] * g, {})
        >>> params, hps = [torch.tensor([1.0, 2.0])], [{"learning_rate": 0.1}]
        >>> step = TorchEngine().prepare(Program(sgd), xp, params, [torch.tensor([0.5, -1.0])], {}, hps)
        >>> step.update(hps); step.update(hps); step.parts, params[0]
        ({'host': [], 'device': [], 'generic': [0]}, tensor([0.9000, 2.2000]))
        """
        return TorchStep(self, program, xp, params, grads, slots, hps)
