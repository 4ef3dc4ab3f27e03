"""``python -m campaignd`` runs the daemon."""

from .runtime.main import main

raise SystemExit(main())
