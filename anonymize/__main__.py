"""``python -m anonymize``: the ``cdranon`` command line."""

from anonymize.cli import main

if __name__ == "__main__":
    main()
