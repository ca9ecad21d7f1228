"""`python -m samfast`: the same command line as the `samfast` entry point."""

from samfast.cli import main

main()
