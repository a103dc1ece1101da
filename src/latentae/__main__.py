import sys

from latentae.cli import main

sys.exit(main())
