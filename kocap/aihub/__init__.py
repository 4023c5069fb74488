"""AI-Hub: protocol client, file-tree parser, archive handling, label parsers, loopback emulator."""
