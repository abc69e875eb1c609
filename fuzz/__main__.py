import sys

from fuzz.driver import main

sys.exit(main())
