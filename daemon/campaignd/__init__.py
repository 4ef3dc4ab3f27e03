"""campaignd: an email-campaign daemon driven by YAML files in git."""

__version__ = "0.1.0"
