"""The study report: tables from trial results, figures, and the markdown/HTML writer."""
