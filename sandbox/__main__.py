"""`python -m sandbox`: run the sandbox until SIGINT or SIGTERM."""

import sys

from sandbox.server import main

sys.exit(main())
