"""Stand-ins for vendor Python modules, passed to sources through their constructors."""
