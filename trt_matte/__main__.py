import signal
import sys

from .files import interrupted_line
from .interrupts import held_signals


def run() -> int:
    """Console entry point: Ctrl-C while the heavy modules load exits as it does later."""
    try:
        with held_signals():  # native libraries load here (onnx, ONNX Runtime, PyAV)
            from .cli import main

        return main()
    except KeyboardInterrupt:
        print(interrupted_line(), file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(run())
