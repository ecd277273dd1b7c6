"""`python -m gateway` runs the edgesim CLI."""

from gateway.cli import main

main()
