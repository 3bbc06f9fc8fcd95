"""PulseMind storage: the SQL schema, sessions, migrations and repository functions.

Everything the app and training keep lives here: users, consultations and their messages,
attachments (stored once per sha256, de-identified derivatives only), model variants and
the audit trail. SQLite by default (one file, WAL), any SQLAlchemy URL otherwise
(PostgreSQL through psycopg 3). Importing does no work; nothing here imports `app` or
`training`, and of `model` only the dependency-free root of the error hierarchy
(`model.errors`).

    from storage import Database, default_database_url, create_user, authenticate
    db = Database(default_database_url())
    db.upgrade()                                    # Alembic, to the newest schema
    admin = create_user(db, "ada", "a long passphrase", "admin")

Repository functions take the `Database` and plain values, run in one transaction each,
return frozen records (storage.records) and raise storage.errors.StorageError subclasses
whose `user_message` the UI shows. Modules: db (engine, sessions, migrations), models
(schema), access (who may read and write what), users, consultations, messages,
attachments, variants, audit.
"""

from storage.access import Uploads
from storage.attachments import (
    get_attachment_image,
    get_attachment_images,
    user_can_access_attachment,
)
from storage.audit import list_audit, record_audit
from storage.consultations import (
    check_writable,
    create_consultation,
    delete_consultation,
    get_consultation,
    list_consultations,
    rename_consultation,
)
from storage.db import Database, default_database_url
from storage.errors import (
    Conflict,
    DatabaseBusy,
    DatabaseUnavailable,
    InvalidInput,
    NotFound,
    PermissionDenied,
    StorageError,
)
from storage.messages import (
    add_assistant_message,
    add_user_message,
    get_message,
    history,
    update_assistant_message,
)
from storage.models import AttachmentKind, AuditOutcome, FinishReason, MessageRole, UserRole
from storage.records import (
    AttachmentRecord,
    AuditRecord,
    ConsultationRecord,
    ImageRecord,
    MessageRecord,
    NewAttachment,
    NewImage,
    UserRecord,
    VariantRecord,
)
from storage.users import (
    MIN_PASSWORD_LENGTH,
    authenticate,
    count_users,
    create_user,
    get_user,
    get_user_by_name,
    list_users,
    set_password,
    set_user_active,
)
from storage.variants import (
    ensure_model_variant,
    get_variant,
    get_variant_by_name,
    list_active_variants,
    list_variants,
    set_variant_active,
)

__all__ = [
    "AttachmentKind",
    "AttachmentRecord",
    "AuditOutcome",
    "AuditRecord",
    "Conflict",
    "ConsultationRecord",
    "Database",
    "DatabaseBusy",
    "DatabaseUnavailable",
    "FinishReason",
    "ImageRecord",
    "InvalidInput",
    "MIN_PASSWORD_LENGTH",
    "MessageRecord",
    "MessageRole",
    "NewAttachment",
    "NewImage",
    "NotFound",
    "PermissionDenied",
    "StorageError",
    "UserRecord",
    "UserRole",
    "Uploads",
    "VariantRecord",
    "add_assistant_message",
    "add_user_message",
    "authenticate",
    "count_users",
    "check_writable",
    "create_consultation",
    "create_user",
    "default_database_url",
    "delete_consultation",
    "ensure_model_variant",
    "get_attachment_image",
    "get_attachment_images",
    "get_consultation",
    "get_message",
    "get_user",
    "get_user_by_name",
    "get_variant",
    "get_variant_by_name",
    "history",
    "list_active_variants",
    "list_audit",
    "list_consultations",
    "list_users",
    "list_variants",
    "record_audit",
    "rename_consultation",
    "set_password",
    "set_user_active",
    "set_variant_active",
    "update_assistant_message",
    "user_can_access_attachment",
]
