"""mmrecbole models (general_recommender); the registry finds the classes exported here."""
