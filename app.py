"""Start the PulseMind web app: `python app.py [--help]` (same as `pulsemind app`)."""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main(["app", *sys.argv[1:]]))
