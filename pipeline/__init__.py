"""The `srq` command line: one thin sub-command per stage, plus `run` for all of them."""
