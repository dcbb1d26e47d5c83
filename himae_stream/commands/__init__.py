"""Subcommands of the `himae` entry point, one module each."""
