"""The package's version, written in this one place.

``pyproject.toml`` declares the version dynamic and setuptools reads this literal without importing the
package (``[tool.setuptools.dynamic]``); ``fcnseg.__version__`` and ``fcnseg --version`` import it. A source
checkout on ``PYTHONPATH`` therefore reports its own version, not that of whatever fcnseg is installed.
"""

__version__ = "0.2.0"
