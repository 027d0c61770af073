"""``python -m schemahub_core`` runs the ``schemahub`` command."""

from schemahub_core.apps.cli import main

main()
