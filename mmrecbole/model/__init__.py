"""mmrecbole models: sequential, general, and external (implicit) recommenders on RecBole's model contract."""
