"""Tools that read wg-quick files (or a live interface read as one): explain, lint,
calc, map."""
