"""The offer selector: the best eligible offer of a catalog for each offer slot, with caps."""
