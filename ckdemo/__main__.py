"""`python -m ckdemo`: the same as the `ckdemo` command."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="ckdemo")
