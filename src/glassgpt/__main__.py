"""`python -m glassgpt ...`, which is what `torchrun -m glassgpt train ...` runs."""

from glassgpt.cli import main

if __name__ == "__main__":
    main()
