"""mmrecbole models (sequential_recommender); the registry finds the classes exported here."""
