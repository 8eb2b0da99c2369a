"""`python -m training ...` / `accelerate launch -m training ...`: same flags as `videollava train`."""

import sys

from training.cli import main


if __name__ == "__main__":
    sys.exit(main())
