"""The ``cartwise`` command groups, one module each; ``cartwise.app.cli`` assembles them under its root group."""
