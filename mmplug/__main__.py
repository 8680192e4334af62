"""``python -m mmplug``: the same as the ``mmplug`` command."""

import sys

from mmplug.cli.main import main

sys.exit(main())
