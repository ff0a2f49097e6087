"""``python -m hardattn`` (and ``torchrun -m hardattn``): the ``hardattn`` command."""

from hardattn.cli import main

if __name__ == "__main__":
    main()
