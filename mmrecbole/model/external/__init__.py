"""mmrecbole models (external); the registry finds the classes exported here."""
