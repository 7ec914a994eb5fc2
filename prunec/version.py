"""prunec's version: one place, read by pyproject (setuptools dynamic version) and the code."""
__version__ = "0.1.0"
