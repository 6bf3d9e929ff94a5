"""`python -m charnn` runs the same command line as the `charnn` script."""

from charnn.cli import main

main()
