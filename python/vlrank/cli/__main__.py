import sys

from vlrank.cli import main

sys.exit(main())
