"""The export stage's version, recorded in every manifest it writes (``versions.export``)."""
__version__ = "0.1.0"
