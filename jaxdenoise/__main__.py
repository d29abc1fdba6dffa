"""``python -m jaxdenoise COMMAND [flags]``: the ``jaxdenoise`` console command (``cli.console``)."""
from jaxdenoise import cli

if __name__ == "__main__":
    cli.console()
