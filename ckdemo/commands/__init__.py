"""Subcommands of `ckdemo` beyond the menu: one module per group; importing registers them."""
