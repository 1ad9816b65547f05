"""Provider adapters. Each is a plugin in the ``shotline.providers`` entry-point group."""
