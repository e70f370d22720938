"""``python -m ntk_advisor``: the CLI, as launchers such as ``torchrun -m`` start it."""

from .cli import main

main()
