"""Writers of force-field files for other engines."""
