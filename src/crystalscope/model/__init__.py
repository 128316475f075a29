"""Physics value objects shared by every modality: beam, detector, crystal, reflections."""
