"""Protocol adapters: each parses its wire format, calls the request core, renders answers."""
