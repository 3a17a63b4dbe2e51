"""One module per `ossforge` sub-command; each exposes `register(app)`."""
