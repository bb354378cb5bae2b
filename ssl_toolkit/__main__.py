import sys

from ssl_toolkit.cli import main

sys.exit(main())
