"""`roost-sim` subcommands: one module each, same contract as agent/commands (``register(subparsers)``)."""
