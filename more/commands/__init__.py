"""One module per ``python -m more`` subcommand: ``add_arguments(parser)`` and ``run(args) -> int``."""
