"""Plumbing every step shares: user errors (one line, exit 2), console output, safe file writes."""
