"""The directory of users: who has which Ayrshare profile, created on demand exactly once, with linked networks."""

from .accounts import AccountsReading, UserAccounts
from .admin import UserAdmin, user_json
from .database import Database, DatabaseDown, NotMigrated
from .directory import ClaimHeld, Directory, UserRecord
from .ids import USER_ID, validate_user
from .json_file import JsonFileDirectory, ProfileDirectory
from .lookup import LookupCache, ProfileLookup
from .provisioning import CreationInProgress, CreationUnresolved, Provisioner

__all__ = [
    "AccountsReading",
    "ClaimHeld",
    "CreationInProgress",
    "CreationUnresolved",
    "Database",
    "DatabaseDown",
    "Directory",
    "JsonFileDirectory",
    "LookupCache",
    "NotMigrated",
    "ProfileDirectory",
    "ProfileLookup",
    "Provisioner",
    "UserAccounts",
    "UserAdmin",
    "USER_ID",
    "UserRecord",
    "validate_user",
    "user_json",
]
