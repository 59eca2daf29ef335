"""`python -m colorgan ...` is the same as the `colorgan` command (torchrun uses this form)."""

from colorgan.cli import main

raise SystemExit(main())
