"""``python -m trainlab`` (and ``torchrun -m trainlab``) runs the CLI."""

from trainlab.cli import main

if __name__ == "__main__":
    main()
