import sys

from himae_stream.cli import main

sys.exit(main())
