import sys

from conpaas_cli.main import main

sys.exit(main())
