"""Sub-commands of the ``fcnseg`` CLI: one module each, with ``add_parser`` and ``run``."""
