"""One module per `srq` sub-command: `add_arguments(parser)` and `run(args) -> int`. Modules import their stage lazily inside `run`."""
