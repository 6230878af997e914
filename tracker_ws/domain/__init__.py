"""Pure core: no I/O, no event loop. Everything here is unit-tested without servers."""
