import sys

from xlmnist.cli import main

sys.exit(main())
