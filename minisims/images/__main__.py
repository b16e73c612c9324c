"""``python -m minisims.images``: see minisims/images/cli.py."""
from .cli import entry

entry()
