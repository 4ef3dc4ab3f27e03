"""Templates and recipient rows → the exact bytes of one message (SPEC §3 "Rendering")."""
