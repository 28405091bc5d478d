import sys


def run() -> int:
    """Console entry point: Ctrl-C while the heavy modules load still exits quietly."""
    try:
        from .cli import main

        return main()
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(run())
