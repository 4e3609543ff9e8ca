"""File writers of the synthetic cohort: one module per landing-zone format."""
