"""The ``crystalscope`` command: a thin typer front end over the library."""
