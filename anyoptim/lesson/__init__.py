"""The lesson app: its experiments, figures and the ``anyoptim`` command line.

Nothing in the library imports this package.
"""
