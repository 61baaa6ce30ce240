"""`python -m mailhelpdesk` runs the CLI."""

from mailhelpdesk.cli import main

main()
