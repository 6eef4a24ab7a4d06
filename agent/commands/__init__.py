"""`roost` subcommands: one module each, found by agent.cli.

A module here defines ``register(subparsers)``, which adds its subcommand(s) to the argparse
subparsers object and sets ``func`` on each parser to a callable taking the parsed namespace and
returning an exit code.
"""
