"""Developer tools that are not part of the installed ``more`` package (run from a checkout)."""
