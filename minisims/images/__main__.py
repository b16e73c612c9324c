"""``python -m minisims.images``: see minisims/images/cli.py."""
from minisims.cli_util import during_startup

during_startup()  # Ctrl-C while the imports below load: one line, exit 130
from .cli import entry  # noqa: E402

entry()
