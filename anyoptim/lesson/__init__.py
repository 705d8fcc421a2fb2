"""The lesson app: its experiments, figures and the ``anyoptim`` command line.

Nothing in the library imports this package, and importing :mod:`anyoptim`
does not import it.  One responsibility per module, arrows pointing down:

``cli``
    The ``anyoptim`` command (compare, trajectories, batch-sizes, train): parses, prints, saves figures.
``plots``
    The figures, with matplotlib imported only when one is drawn.
``compare``, ``trajectories``, ``batch_sizes``, ``training``
    The experiments as pure functions returning dataclasses: no printing, no plotting.
``problem``
    The lesson's data, network, seed and four optimizers, shared by the experiments.
``backends``
    Array libraries and devices by name.
``checks``
    :class:`~anyoptim.lesson.checks.ExperimentError` and the checks of counts.
"""
