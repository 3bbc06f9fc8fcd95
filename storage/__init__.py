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
feedback, attachments, variants, audit, cases (imported case sets), compare (comparisons
and their answers), votes, reviews (second opinions on voted turns), judge_cache (cached
judge verdicts), runs (training runs and their metrics), evals (the PulseMind Benchmark's runs, cases, answers and verdicts).
"""

from storage.access import Uploads
from storage.attachments import (
    get_attachment_image,
    get_attachment_images,
    user_can_access_attachment,
)
from storage.audit import list_audit, record_audit
from storage.cases import (
    count_cases,
    get_case,
    get_case_set_by_name,
    import_case_set,
    list_case_sets,
    list_cases,
)
from storage.compare import (
    LoggedQuestion,
    add_compare_turn,
    create_comparison,
    get_compare_turn,
    get_comparison,
    keep_response,
    list_compare_turns,
    logged_questions,
    record_response,
)
from storage.compare_context import turn_context
from storage.consultations import (
    check_writable,
    create_consultation,
    delete_consultation,
    get_consultation,
    list_consultations,
    list_consultations_of,
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
from storage.evals import EvalRunRecord, get_eval_run, list_eval_runs
from storage.feedback import get_feedback, set_feedback
from storage.judge_cache import CachedVerdict, NewVerdict, cached_verdicts, store_verdicts
from storage.messages import (
    add_assistant_message,
    add_user_message,
    answer_versions,
    check_user_message,
    choose_version,
    get_message,
    history,
    start_consultation,
    update_assistant_message,
)
from storage.models import (
    AttachmentKind,
    AuditOutcome,
    CaseFormat,
    CompareSource,
    CompareTurnState,
    FinishReason,
    MessageRole,
    Overall,
    Preference,
    RunKind,
    RunStatus,
    Side,
    Thumbs,
    UserRole,
)
from storage.records import (
    AnswerVersions,
    AttachmentRecord,
    AuditRecord,
    CaseRecord,
    CaseSetRecord,
    CaseTurnRecord,
    CompareTurnRecord,
    ComparisonRecord,
    ConsultationRecord,
    ContextMessage,
    FeedbackRecord,
    ImageRecord,
    MessageRecord,
    NewAttachment,
    NewCase,
    NewCaseTurn,
    NewImage,
    ResponseRecord,
    UserRecord,
    VariantRecord,
    VoteRecord,
)
from storage.reviews import assign_review
from storage.runs import (
    MetricPoint,
    RunRecord,
    add_metrics,
    create_run,
    get_run,
    list_runs,
    mark_failed,
    mark_finished,
    mark_interrupted_if_dead,
    mark_running,
    metrics_of,
    set_checkpoint,
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
from storage.votes import DIMENSIONS, get_vote, list_votes, record_vote, reveal

__all__ = [
    "AnswerVersions",
    "AttachmentKind",
    "AttachmentRecord",
    "AuditOutcome",
    "AuditRecord",
    "Conflict",
    "ConsultationRecord",
    "Database",
    "DatabaseBusy",
    "FeedbackRecord",
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
    "Thumbs",
    "UserRecord",
    "UserRole",
    "Uploads",
    "VariantRecord",
    "add_assistant_message",
    "add_user_message",
    "check_user_message",
    "answer_versions",
    "authenticate",
    "choose_version",
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
    "get_feedback",
    "get_message",
    "get_user",
    "get_user_by_name",
    "get_variant",
    "get_variant_by_name",
    "history",
    "list_active_variants",
    "list_audit",
    "list_consultations",
    "list_consultations_of",
    "list_users",
    "list_variants",
    "record_audit",
    "rename_consultation",
    "set_feedback",
    "set_password",
    "set_user_active",
    "set_variant_active",
    "start_consultation",
    "update_assistant_message",
    "user_can_access_attachment",
    # Compare (cases, comparisons, votes)
    "CaseFormat",
    "CompareSource",
    "CompareTurnState",
    "Overall",
    "Preference",
    "Side",
    "CaseRecord",
    "CaseSetRecord",
    "CaseTurnRecord",
    "ComparisonRecord",
    "CompareTurnRecord",
    "ContextMessage",
    "NewCase",
    "NewCaseTurn",
    "ResponseRecord",
    "VoteRecord",
    "count_cases",
    "get_case",
    "get_case_set_by_name",
    "import_case_set",
    "list_case_sets",
    "list_cases",
    "add_compare_turn",
    "create_comparison",
    "get_compare_turn",
    "get_comparison",
    "keep_response",
    "list_compare_turns",
    "logged_questions",
    "LoggedQuestion",
    "record_response",
    "turn_context",
    "DIMENSIONS",
    "get_vote",
    "list_votes",
    "record_vote",
    "reveal",
    "assign_review",
    # Retrain (judge verdict cache, training runs and their metrics)
    "CachedVerdict",
    "NewVerdict",
    "cached_verdicts",
    "store_verdicts",
    "RunKind",
    "RunStatus",
    "RunRecord",
    "MetricPoint",
    "create_run",
    "mark_running",
    "set_checkpoint",
    "add_metrics",
    "mark_finished",
    "mark_failed",
    "mark_interrupted_if_dead",
    "get_run",
    "list_runs",
    "metrics_of",
    # The PulseMind Benchmark (evaluation runs; the rest is in storage.evals)
    "EvalRunRecord",
    "get_eval_run",
    "list_eval_runs",
]
