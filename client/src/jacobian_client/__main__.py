"""``python -m jacobian_client`` runs the ``jacobian`` command."""

from .cli import main

main()
