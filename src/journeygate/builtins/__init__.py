"""Built-in behaviour, written as ordinary plugins (and worked examples for plugin authors)."""
