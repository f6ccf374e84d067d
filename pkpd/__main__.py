import sys

from pkpd.cli import main

sys.exit(main())
