"""From stored history to prompt tokens: the window, the builder, `<think>` handling."""
