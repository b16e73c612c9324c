"""``python -m minisims.images``: see minisims/images/cli.py."""
from minisims import sigint

sigint.during_startup()  # Ctrl-C while the imports below load: one line, exit 130
from .cli import entry  # noqa: E402

entry()
