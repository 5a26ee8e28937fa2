"""A2A wire adapters: agent cards (fetch, validate, rewrite), request classification, the streaming proxy."""
