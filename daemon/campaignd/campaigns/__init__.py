"""The campaign lifecycle: enrollment, state passes (conductor) and operator transitions."""
