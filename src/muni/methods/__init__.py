"""Methods: MUNI and the baselines, all behind `muni.methods.base`'s API."""
