"""`python -m engine.cli`: the `journeys` command, for environments without the console script."""

from .app import main

if __name__ == "__main__":
    main()
