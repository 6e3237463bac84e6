"""The directory that maps the team's user ids to Ayrshare Profile Keys."""

from .json_file import JsonFileDirectory, ProfileDirectory

__all__ = ["JsonFileDirectory", "ProfileDirectory"]
