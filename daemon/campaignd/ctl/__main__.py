"""``python -m campaignd.ctl`` is campaignctl."""

from .main import main

raise SystemExit(main())
