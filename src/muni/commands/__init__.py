"""CLI command groups, one module each (see muni.cli.COMMANDS)."""
