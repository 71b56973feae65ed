"""The commands of ``steplog``: one module each, every one with ``add_parser(sub)`` and
``run(args) -> int``. They import only argparse at module level: ``steplog --help`` and
``steplog ls`` stay fast, and optional libraries load in the command that needs them."""

COMMANDS = ["ls", "show", "read", "plot", "sql", "transfer", "import_mlflow", "import_tensorboard", "provenance", "diff", "maintenance"]
