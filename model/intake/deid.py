"""De-identify a DICOM header, then check that it worked.

1. dicognito applies the DICOM PS3.15 Basic Application Level Confidentiality Profile:
   person names, IDs, addresses and institution details get consistent pseudonyms, UIDs are
   regenerated, dates shifted, some elements removed.
2. Pseudonyms still read like a real patient ("BEST^VONDA"), so we then remove outright every
   patient/staff/institution identity element, every person name (VR PN) at any depth, free
   text (descriptions, comments: clinicians type names into them) and private tags.
3. Verification: every string left in the header is compared with the identifying values of
   the original header (names and their parts, IDs, birth date, institution...); an element
   that still contains one is removed too.

The report names what was done by tag KEYWORD only. `identifying_tokens` are the original
values, kept in memory so the caller can check its own output; they are never logged.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version

from dicognito.anonymizer import Anonymizer
from loguru import logger
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from .errors import DeidentificationFailed

PROFILE_NAME = "DICOM PS3.15 Basic Application Level Confidentiality Profile"

#: Removed after dicognito, wherever they occur (their pseudonyms look like real people).
IDENTITY_KEYWORDS = frozenset(
    {
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientBirthTime",
        "PatientBirthName",
        "PatientMotherBirthName",
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientTelecomInformation",
        "MedicalRecordLocator",
        "PatientInsurancePlanCodeSequence",
        "MilitaryRank",
        "BranchOfService",
        "Occupation",
        "EthnicGroup",
        "PatientReligiousPreference",
        "CountryOfResidence",
        "RegionOfResidence",
        "ResponsiblePerson",
        "ResponsibleOrganization",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "InstitutionCodeSequence",
        "StationName",
        "DeviceSerialNumber",
        "AccessionNumber",
        "StudyID",
        "RequestedProcedureID",
        "PerformedProcedureStepID",
        "ScheduledProcedureStepID",
        "PlacerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequest",
        "AdmissionID",
        "IssuerOfAdmissionID",
        "CurrentPatientLocation",
        "PatientState",
        "ReferencedPatientPhotoSequence",
    }
)
#: Free text (LO/LT/ST/UT descriptions and comments) is removed: people type names into it.
FREE_TEXT_KEYWORDS = frozenset(
    {
        "StudyDescription",
        "SeriesDescription",
        "ProtocolName",
        "ImageComments",
        "PatientComments",
        "StudyComments",
        "AdditionalPatientHistory",
        "AdmittingDiagnosesDescription",
        "ReasonForStudy",
        "ReasonForTheRequestedProcedure",
        "RequestedProcedureDescription",
        "PerformedProcedureStepDescription",
        "ScheduledProcedureStepDescription",
        "DerivationDescription",
        "InterpretationText",
        "TextValue",
        "AcquisitionComments",
        "ContrastBolusAgent",
        "RequestingService",
        "ClinicalTrialSponsorName",
        "ClinicalTrialProtocolName",
        "ClinicalTrialSiteName",
    }
)
#: Value representations that are free text, names or network station titles (AE titles name
#: a site's devices) wherever they appear.
REMOVED_VRS = frozenset({"PN", "LT", "ST", "UT", "AE"})
#: Original values checked for in what is left: these elements identify the patient.
TOKEN_KEYWORDS = frozenset(
    {
        "PatientID",
        "PatientBirthDate",
        "OtherPatientIDs",
        "OtherPatientNames",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "InstitutionName",
        "InstitutionAddress",
        "AccessionNumber",
        "MedicalRecordLocator",
        "AdmissionID",
    }
)
#: Shortest identifying value we search for: shorter strings (or purely numeric ones under
#: MIN_NUMERIC_TOKEN) match too much innocent text ("CT", "512") to mean anything.
MIN_TOKEN = 3
MIN_NUMERIC_TOKEN = 6
#: Well-formed DICOM date, date-time and time values (PS3.5 6.2; ACR-NEMA dots accepted).
_DA = re.compile(r"^\d{8}$")
_DT = re.compile(r"^\d{4}(\d{2}){0,5}(\.\d{1,6})?([+-]\d{4})?$")
_TM = re.compile(r"^\d{2}(\d{2}){0,2}(\.\d{1,6})?$")
#: Elements skipped when snapshotting values (bulk data; hashing it is slow and pointless).
BULK_VRS = frozenset({"OB", "OW", "OF", "OD", "OL", "OV", "UN"})


@dataclass
class Deidentified:
    report: dict  # JSON-able, keywords and counts only
    identifying_tokens: frozenset[str]  # original identifying values; never log or store


def library_version() -> str:
    try:
        return f"dicognito {version('dicognito')}"
    except PackageNotFoundError:  # a source checkout of dicognito without metadata
        return "dicognito (version unknown)"


def deidentify(ds: Dataset) -> Deidentified:
    """De-identify `ds` in place (header only; pixels are not touched)."""
    tokens = identifying_tokens(ds)
    before = _snapshot(ds)
    # A date or time that does not parse cannot be shifted (dicognito raises on it), and a
    # malformed "date" can hold anything, a name included: remove it first.
    malformed = _remove_where(ds, _malformed_date_or_time)
    try:
        Anonymizer().anonymize(ds)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
        logger.warning("dicognito failed on a header: {}", type(exc).__name__)
        raise DeidentificationFailed(
            "The DICOM header has values the de-identification tool cannot process, "
            "so the file was not used. Export it again from the viewer (anonymised if possible)."
        ) from exc

    n_private = _count_private(ds)
    ds.remove_private_tags()
    for sub in _all_datasets(ds):
        sub.remove_private_tags()
    removed_by_us = _remove_where(
        ds,
        lambda elem: (
            elem.keyword in IDENTITY_KEYWORDS
            or elem.keyword in FREE_TEXT_KEYWORDS
            or elem.VR in REMOVED_VRS
        ),
    )
    pattern = token_pattern(tokens)
    leftover = (
        _remove_where(
            ds,
            lambda elem: elem.VR not in BULK_VRS and elem.VR != "SQ" and _matches(pattern, elem),
        )
        if pattern
        else set()
    )
    after = _snapshot(ds)
    replaced = sorted(
        {kw for key, (kw, digest) in after.items() if key in before and before[key][1] != digest}
    )
    removed = sorted({before[key][0] for key in before.keys() - after.keys()} - {""})
    report = {
        "profile": PROFILE_NAME,
        "library": library_version(),
        "then": "patient, staff and institution identity, person names, free text and private "
        "tags removed; remaining values checked against the original identifiers",
        "replaced": [k for k in replaced if k],
        "removed": removed,
        "removed_on_verify": sorted(k for k in leftover if k),
        "removed_malformed_dates": sorted(k for k in malformed if k),
        "private_tags_removed": n_private,
        "pixels_checked": False,
    }
    logger.debug(
        "DICOM header de-identified: {} replaced, {} removed ({} by us, {} on verify)",
        len(report["replaced"]),
        len(removed),
        len(removed_by_us),
        len(leftover),
    )
    return Deidentified(report, tokens)


def _malformed_date_or_time(elem) -> bool:
    if elem.VR not in ("DA", "DT", "TM") or not elem.value:
        return False
    for value in _strings(elem.value) or [str(elem.value)]:
        v = value.strip()
        if not v:
            continue
        if elem.VR == "TM":
            if not _TM.match(v.replace(":", "")):
                return True
            continue
        v = v.replace(".", "") if elem.VR == "DA" else v
        if not (_DA.match(v) if elem.VR == "DA" else _DT.match(v)):
            return True
        try:
            datetime.strptime(v[:8], "%Y%m%d"[: max(2, len(v[:8]) - 2)])
        except ValueError:
            return True
    return False


def identifying_tokens(ds: Dataset) -> frozenset[str]:
    """Original identifying values of `ds` (whole values, and the parts of person names)."""
    tokens: set[str] = set()
    for sub in _all_datasets(ds):
        for elem in sub:
            if elem.VR != "PN" and elem.keyword not in TOKEN_KEYWORDS:
                continue
            for value in _strings(elem.value):
                # Names are also matched by part ("Doe", "Jane"); other values only whole, so
                # that "General Hospital" does not make the word "general" an identifier.
                parts = re.split(r"[\^=\s,]+", value) if elem.VR == "PN" else []
                for part in [value, *parts]:
                    token = as_token(part)
                    if token:
                        tokens.add(token)
    return frozenset(tokens)


def as_token(value: str) -> str | None:
    token = value.strip(" ^=.,-\x00").lower()
    alnum = re.sub(r"[^0-9a-z]", "", token)
    if len(token) < MIN_TOKEN or not alnum:
        return None
    if alnum.isdigit() and len(alnum) < MIN_NUMERIC_TOKEN:
        return None
    return token


def token_pattern(tokens: Iterable[str]) -> re.Pattern[str] | None:
    """A case-insensitive regex matching any token as a whole word."""
    toks = sorted(set(tokens), key=len, reverse=True)
    if not toks:
        return None
    alternation = "|".join(re.escape(t) for t in toks)
    return re.compile(rf"(?<![0-9A-Za-z])(?:{alternation})(?![0-9A-Za-z])", re.IGNORECASE)


def contains_identifier(text: str, tokens: Iterable[str]) -> bool:
    pattern = token_pattern(tokens)
    return bool(pattern and pattern.search(text))


def _matches(pattern: re.Pattern[str], elem) -> bool:
    return any(pattern.search(s) for s in _strings(elem.value))


def _strings(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, bytes):
        return [value.decode("latin-1", errors="replace")]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return [s for v in value for s in _strings(v)]
    if type(value).__name__ == "PersonName":
        return [str(value)]
    return []


def _all_datasets(ds: Dataset) -> list[Dataset]:
    """`ds`, its file meta and every nested sequence item."""
    out = [ds]
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        out.append(meta)
    stack = [ds]
    while stack:
        cur = stack.pop()
        for elem in cur:
            if elem.VR == "SQ":
                for item in elem.value:
                    out.append(item)
                    stack.append(item)
    return out


def _remove_where(ds: Dataset, predicate) -> set[str]:
    """Delete every element (at any depth) for which `predicate(elem)` holds; their keywords."""
    removed: set[str] = set()
    for sub in _all_datasets(ds):
        doomed: list[BaseTag] = [elem.tag for elem in sub if predicate(elem)]
        for tag in doomed:
            removed.add(keyword_for_tag(tag))
            del sub[tag]
    return removed


def _count_private(ds: Dataset) -> int:
    return sum(1 for sub in _all_datasets(ds) for elem in sub if elem.tag.is_private)


def _snapshot(ds: Dataset, prefix: tuple = ()) -> dict[tuple, tuple[str, str]]:
    """path -> (keyword, digest of value) for every element, to tell what changed."""
    out: dict[tuple, tuple[str, str]] = {}
    if not prefix and getattr(ds, "file_meta", None) is not None:
        out.update(_snapshot(ds.file_meta, ("meta",)))
    for elem in ds:
        key = (*prefix, int(elem.tag))
        if elem.VR == "SQ":
            out[key] = (elem.keyword, f"SQ{len(elem.value)}")
            for i, item in enumerate(elem.value):
                out.update(_snapshot(item, (*key, i)))
        elif elem.VR in BULK_VRS:
            out[key] = (elem.keyword, "bulk")
        else:
            out[key] = (elem.keyword, hashlib.sha1(repr(elem.value).encode()).hexdigest())
    return out
