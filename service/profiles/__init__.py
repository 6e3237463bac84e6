"""The directory of users: who has which Ayrshare profile, created on demand exactly once, with linked networks."""

from .accounts import Accounts, LinkedAccounts
from .admin import UserAdmin, user_json
from .database import Database, DatabaseDown, NotMigrated
from .directory import SOURCES, ClaimHeld, Directory, UserRecord
from .ids import USER_ID, validate_user
from .json_file import JsonFileDirectory, ProfileDirectory
from .lookup import LookupCache, ProfileLookup
from .provisioning import CreationInProgress, CreationUnresolved, Provisioner

__all__ = [
    "SOURCES",
    "Accounts",
    "ClaimHeld",
    "CreationInProgress",
    "CreationUnresolved",
    "Database",
    "DatabaseDown",
    "Directory",
    "JsonFileDirectory",
    "LinkedAccounts",
    "LookupCache",
    "NotMigrated",
    "ProfileDirectory",
    "ProfileLookup",
    "Provisioner",
    "UserAdmin",
    "USER_ID",
    "UserRecord",
    "validate_user",
    "user_json",
]
