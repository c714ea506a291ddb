"""Commands: one syntax on every platform; parsing is pure, handlers act."""
