"""Entity and field definitions as data: adding an entity is one ``Entity(...)`` entry.

Names, titles and types follow civicrm-core's schema (5.77). Field order is the order real
APIv4 returns fields in (``select: ["*"]``), which is what clients see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Data types as APIv4 getFields names them.
INT, STR, BOOL, DATE, TS, MONEY, FLOAT, TEXT = (
    "Integer",
    "String",
    "Boolean",
    "Date",
    "Timestamp",
    "Money",
    "Float",
    "Text",
)

_INPUT_FOR_TYPE = {
    INT: "Number",
    STR: "Text",
    BOOL: "CheckBox",
    DATE: "Date",
    TS: "Date",
    MONEY: "Text",
    FLOAT: "Text",
    TEXT: "TextArea",
}

NOW = object()  # default_value marker: "current timestamp when created"
ACTOR = object()  # default_value marker: "the acting contact"


@dataclass(frozen=True)
class Field:
    """One APIv4 field. ``type`` is Field (a column), Custom or Extra (computed/virtual)."""

    name: str
    data_type: str
    title: str
    input_type: str = ""
    required: bool = False
    default: Any = None
    options: dict[Any, str] | None = None
    fk_entity: str | None = None
    readonly: bool = False
    nullable: bool = True
    description: str | None = None
    type: str = "Field"
    contact_types: tuple[str, ...] | None = None  # Contact: only shown for these types
    echo: bool = False  # returned by create even when not given (the BAO sets it)
    sql: str | None = None  # Extra fields: SQL expression, "{a}" is the row's table alias
    custom_group: str | None = None  # Custom fields: the group's API name
    column: str | None = None  # Custom fields: the column in the group's table
    # a list: 1 (SERIALIZE_SEPARATOR_BOOKEND) stored "\x011\x012\x01", 5 (SERIALIZE_COMMA) "a,b"
    serialize: int = 0
    unique: bool = False  # a UNIQUE index (Tag.name): a duplicate is "DB Error: already exists"
    # Filter fields (type "Filter": where only, never selected): the records a value matches,
    # "{a}" the row's alias, "{cond}" the clause on the member column "m.value"
    filter_sql: str | None = None

    @property
    def widget(self) -> str:
        if self.input_type:
            return self.input_type
        return "Select" if self.options else _INPUT_FOR_TYPE.get(self.data_type, "Text")


@dataclass(frozen=True)
class CustomGroup:
    """A custom field group extending an entity, stored in its own table like CiviCRM does."""

    name: str
    title: str
    extends: str
    table: str
    fields: tuple[Field, ...]


@dataclass(frozen=True)
class Entity:
    name: str
    table: str
    title: str
    title_plural: str
    description: str
    fields: tuple[Field, ...]
    label_field: str | None = None
    icon: str | None = None
    searchable: str = "secondary"
    type: tuple[str, ...] = ("DAOEntity",)
    actions: tuple[str, ...] = (
        "autocomplete",
        "create",
        "delete",
        "get",
        "getActions",
        "getFields",
        "replace",
        "save",
        "update",
    )
    # permission needed for reads / writes (None = only ACL-like filtering applies)
    read_perm: str | None = "access CiviCRM"
    write_perm: str = "edit all contacts"
    delete_perm: str | None = None
    create_perm: str | None = None  # create needs this instead of write_perm
    # Order MySQL happens to use when a LIMIT makes it scan an index and no orderBy is given
    limited_scan_order: tuple[str, ...] = ()
    full_update_output: bool = False  # update answers every non-null field (Contact BAO)
    update_extra: tuple[tuple[str, Any], ...] = ()
    create_nulls: tuple[str, ...] = ()  # keys create answers as null (the BAO's own reload)
    create_silent: tuple[str, ...] = ()  # derived on create but not in create's answer
    # create's answer gives dates as the DAO saved them, "20240506100000" (Activity, Note, Tag)
    create_compact_dates: bool = False
    # defaults create's answer gives as the BAO set them, untyped by the field (Note.privacy: 0)
    create_raw_defaults: tuple[tuple[str, Any], ...] = ()
    # keys create/update/save answer after check_permissions (GroupContact: method, tracking)
    write_trailer: tuple[str, ...] = ()

    def field_map(self) -> dict[str, Field]:
        return {f.name: f for f in self.fields}


def F(name: str, data_type: str, title: str, **kw: Any) -> Field:
    """Short constructor so the tables below stay readable."""
    return Field(name, data_type, title, **kw)


def _id(title: str, description: str) -> Field:
    return F("id", INT, title, readonly=True, nullable=False, description=description, input_type="Number")


def _fk(name: str, title: str, entity: str = "Contact", **kw: Any) -> Field:
    kw.setdefault("input_type", "EntityRef")
    return F(name, INT, title, fk_entity=entity, **kw)


IND, ORG, HH = ("Individual",), ("Organization",), ("Household",)
GENDER = {1: "Female", 2: "Male", 3: "Other"}
LOCATION_TYPES = {1: "Home", 2: "Work", 3: "Main", 4: "Other", 5: "Billing"}
PHONE_TYPES = {1: "Phone", 2: "Mobile", 3: "Fax", 4: "Pager", 5: "Voicemail"}
ACTIVITY_TYPES = {
    1: "Meeting",
    2: "Phone Call",
    3: "Email",
    4: "Outbound SMS",
    5: "Event Registration",
    6: "Contribution",
    7: "Membership Signup",
    9: "Tell a Friend",
    10: "Pledge Acknowledgment",
    12: "Inbound Email",
}
ACTIVITY_STATUS = {
    1: "Scheduled",
    2: "Completed",
    3: "Cancelled",
    4: "Left Message",
    5: "Unreachable",
    6: "Not Required",
    7: "Available",
    8: "No-show",
}
RELATIONSHIP_TYPES = {
    1: "Child of",
    2: "Spouse of",
    3: "Sibling of",
    4: "Employee of",
    5: "Volunteer for",
    6: "Head of Household for",
    7: "Household Member of",
    8: "Case Coordinator is",
    9: "Supervised by",
    10: "Partner of",
}
FINANCIAL_TYPES = {1: "Donation", 2: "Member Dues", 3: "Campaign Contribution", 4: "Event Fee"}
CONTRIBUTION_STATUS = {
    1: "Completed",
    2: "Pending",
    3: "Cancelled",
    4: "Failed",
    5: "In Progress",
    6: "Overdue",
    7: "Refunded",
    8: "Partially paid",
    9: "Pending refund",
    10: "Chargeback",
    11: "Template",
}
PAYMENT_INSTRUMENTS = {1: "Credit Card", 2: "Debit Card", 3: "Cash", 4: "Check", 5: "EFT"}
YES_NO = {0: "No", 1: "Yes"}

_do_not = [
    F(f"do_not_{k}", BOOL, f"Do Not {t}", default=False, nullable=False, echo=True)
    for k, t in (("email", "Email"), ("phone", "Phone"), ("mail", "Mail"), ("sms", "Sms"), ("trade", "Trade"))
]

CONTACT = Entity(
    "Contact",
    "civicrm_contact",
    "Contact",
    "Contacts",
    "Contact - Individuals, Organizations, Households, etc.",
    (
        _id("Contact ID", "Unique Contact ID"),
        F(
            "contact_type",
            STR,
            "Contact Type",
            echo=True,
            default="Individual",
            required=True,
            options={"Household": "Household", "Individual": "Individual", "Organization": "Organization"},
            description="Type of Contact.",
        ),
        F(
            "external_identifier",
            STR,
            "External Identifier",
            description="Unique trusted external ID (generally from a legacy app/datasource). "
            "Particularly useful for deduping operations.",
        ),
        F(
            "display_name",
            STR,
            "Display Name",
            readonly=True,
            echo=True,
            description="Formatted name representing preferred format for display/print/other output.",
        ),
        F("organization_name", STR, "Organization Name", contact_types=ORG, description="Organization Name."),
        F(
            "contact_sub_type",
            STR,
            "Contact Subtype",
            input_type="Select",
            description="May be used to over-ride contact view and edit templates.",
        ),
        F("first_name", STR, "First Name", contact_types=IND, description="First Name."),
        F("middle_name", STR, "Middle Name", contact_types=IND, description="Middle Name."),
        F("last_name", STR, "Last Name", contact_types=IND, description="Last Name."),
        *_do_not,
        F(
            "is_opt_out",
            BOOL,
            "No Bulk Emails (User Opt Out)",
            default=False,
            nullable=False,
            echo=True,
            description="Has the contact opted out from receiving all bulk email "
            "from the organization or site domain?",
        ),
        F(
            "legal_identifier",
            STR,
            "Legal Identifier",
            description="May be used for SSN, EIN/TIN, Household ID (census) or other "
            "applicable unique legal/government ID.",
        ),
        F(
            "sort_name",
            STR,
            "Sort Name",
            readonly=True,
            echo=True,
            description="Name used for sorting different contact types",
        ),
        F("nick_name", STR, "Nickname", description="Nickname."),
        F("legal_name", STR, "Legal Name", contact_types=ORG, description="Legal Name."),
        F(
            "image_URL",
            TEXT,
            "Image Url",
            input_type="File",
            description="optional URL for preferred image (photo, logo, etc.) to display for this contact.",
        ),
        F(
            "preferred_communication_method",
            STR,
            "Preferred Communication Method",
            input_type="Select",
            options={"1": "Phone", "2": "Email", "3": "Postal Mail", "4": "SMS", "5": "Fax"},
            description="What is the preferred mode of communication.",
        ),
        F(
            "preferred_language",
            STR,
            "Preferred Language",
            input_type="Select",
            echo=True,
            options={
                "en_US": "English (United States)",
                "en_GB": "English (United Kingdom)",
                "fr_FR": "French (France)",
                "de_DE": "German",
                "es_ES": "Spanish; Castilian (Spain)",
            },
            description="Which language is preferred for communication. FK to languages in "
            "civicrm_option_value.",
        ),
        F(
            "hash",
            STR,
            "Contact Hash",
            readonly=True,
            echo=True,
            description="Key for validating requests related to this contact.",
        ),
        F("api_key", STR, "Api Key", description="API Key for validating requests related to this contact."),
        F(
            "source",
            STR,
            "Contact Source",
            description="where contact come from, e.g. import, donate module insert...",
        ),
        F(
            "prefix_id",
            INT,
            "Individual Prefix",
            contact_types=IND,
            options={1: "Mrs.", 2: "Ms.", 3: "Mr.", 4: "Dr."},
            description="Prefix or Title for name (Ms, Mr...).",
        ),
        F(
            "suffix_id",
            INT,
            "Individual Suffix",
            contact_types=IND,
            options={1: "Jr.", 2: "Sr.", 3: "II", 4: "III", 5: "IV", 6: "V", 7: "VI", 8: "VII"},
            description="Suffix for name (Jr, Sr...).",
        ),
        F(
            "formal_title",
            STR,
            "Formal Title",
            contact_types=IND,
            description="Formal (academic or similar) title in front of name. (Prof., Dr. etc.)",
        ),
        F(
            "communication_style_id",
            INT,
            "Communication Style",
            echo=True,
            options={1: "Formal", 2: "Familiar"},
            description="Communication style (e.g. formal vs. familiar) to use with this contact.",
        ),
        F(
            "email_greeting_id",
            INT,
            "Email Greeting ID",
            echo=True,
            options={1: "Dear {contact.first_name}"},
            description="FK to civicrm_option_value.id, that has to be valid registered Email Greeting.",
        ),
        F("email_greeting_custom", STR, "Email Greeting Custom", description="Custom Email Greeting."),
        F(
            "email_greeting_display",
            STR,
            "Email Greeting",
            readonly=True,
            description="Cache Email Greeting.",
        ),
        F(
            "postal_greeting_id",
            INT,
            "Postal Greeting ID",
            echo=True,
            options={1: "Dear {contact.first_name}"},
            description="FK to civicrm_option_value.id, that has to be valid registered Postal Greeting.",
        ),
        F("postal_greeting_custom", STR, "Postal Greeting Custom", description="Custom Postal greeting."),
        F(
            "postal_greeting_display",
            STR,
            "Postal Greeting",
            readonly=True,
            description="Cache Postal greeting.",
        ),
        F(
            "addressee_id",
            INT,
            "Addressee ID",
            echo=True,
            options={
                1: "{contact.prefix_id:label}{ }{contact.first_name}{ }"
                "{contact.middle_name}{ }{contact.last_name}{ }{contact.suffix_id:label}"
            },
            description="FK to civicrm_option_value.id, that has to be valid, registered Addressee.",
        ),
        F("addressee_custom", STR, "Addressee Custom", description="Custom Addressee."),
        F("addressee_display", STR, "Addressee", readonly=True, description="Cache Addressee."),
        F("job_title", STR, "Job Title", contact_types=IND, description="Job Title"),
        F("gender_id", INT, "Gender ID", contact_types=IND, options=GENDER, description="FK to gender ID"),
        F("birth_date", DATE, "Birth Date", contact_types=IND, description="Date of birth"),
        F(
            "is_deceased",
            BOOL,
            "Deceased / Is Deceased",
            contact_types=IND,
            default=False,
            nullable=False,
            echo=True,
        ),
        F("deceased_date", DATE, "Deceased Date", contact_types=IND, description="Date of deceased"),
        F("household_name", STR, "Household Name", contact_types=HH, description="Household Name."),
        _fk(
            "primary_contact_id",
            "Household Primary Contact ID",
            contact_types=HH,
            description="Optional FK to Primary Contact for this household.",
        ),
        F(
            "sic_code",
            STR,
            "Sic Code",
            contact_types=ORG,
            description="Standard Industry Classification Code.",
        ),
        F(
            "user_unique_id",
            STR,
            "Unique ID (OpenID)",
            description="the OpenID (or OpenID-style http://username.domain/) unique identifier "
            "for this contact mainly used for logging in to CiviCRM",
        ),
        _fk(
            "employer_id",
            "Current Employer ID",
            contact_types=IND,
            description="OPTIONAL FK to civicrm_contact record.",
        ),
        F("is_deleted", BOOL, "Contact is in Trash", default=False, nullable=False, echo=True),
        F(
            "created_date",
            TS,
            "Created Date",
            readonly=True,
            echo=True,
            default=NOW,
            description="When was the contact was created.",
        ),
        F(
            "modified_date",
            TS,
            "Modified Date",
            readonly=True,
            echo=True,
            default=NOW,
            description="When was the contact (or closely related entity) was created or "
            "modified or deleted.",
        ),
        F(
            "preferred_mail_format",
            STR,
            "Preferred Mail Format",
            default="Both",
            echo=True,
            options={"Text": "Text", "HTML": "HTML", "Both": "Both"},
            description="Deprecated setting for text vs html mailings",
        ),
        F(
            "groups",
            "Array",
            "Groups",
            type="Filter",
            input_type="Select",
            description="Groups (or sub-groups of groups) to which this contact belongs",
            filter_sql="EXISTS (SELECT 1 FROM (SELECT contact_id, group_id AS value "
            "FROM civicrm_group_contact WHERE status = 'Added') m WHERE m.contact_id = {a}.id AND {cond})",
        ),
        F(
            "age_years",
            INT,
            "Age (years)",
            type="Extra",
            readonly=True,
            sql="(CASE WHEN {a}.birth_date IS NULL THEN NULL ELSE "
            "CAST(strftime('%Y', 'now') AS INTEGER) - CAST(strftime('%Y', {a}.birth_date) "
            "AS INTEGER) - (strftime('%m-%d', 'now') < strftime('%m-%d', {a}.birth_date)) "
            "END)",
        ),
        F(
            "next_birthday",
            INT,
            "Next Birthday in (days)",
            type="Extra",
            readonly=True,
            description="Number of days until next birthday",
            sql="(CASE WHEN {a}.birth_date IS NULL THEN NULL ELSE CAST(julianday(CASE WHEN "
            "strftime('%m-%d', {a}.birth_date) >= strftime('%m-%d', 'now') THEN strftime('%Y', 'now') "
            "|| strftime('-%m-%d', {a}.birth_date) ELSE (CAST(strftime('%Y', 'now') AS INTEGER) + 1) "
            "|| strftime('-%m-%d', {a}.birth_date) END) - julianday(date('now')) AS INTEGER) END)",
        ),
        F(
            "address_primary",
            INT,
            "Primary Address",
            type="Extra",
            readonly=True,
            fk_entity="Address",
            input_type="EntityRef",
            sql="(SELECT d.id FROM civicrm_address d WHERE d.contact_id = {a}.id "
            "AND d.is_primary = 1 ORDER BY d.id LIMIT 1)",
        ),
        F(
            "address_billing",
            INT,
            "Billing Address",
            type="Extra",
            readonly=True,
            fk_entity="Address",
            input_type="EntityRef",
            sql="(SELECT d.id FROM civicrm_address d WHERE d.contact_id = {a}.id "
            "AND d.is_billing = 1 ORDER BY d.id LIMIT 1)",
        ),
        F(
            "email_primary",
            INT,
            "Primary Email",
            type="Extra",
            readonly=True,
            fk_entity="Email",
            input_type="EntityRef",
            sql="(SELECT e.id FROM civicrm_email e WHERE e.contact_id = {a}.id "
            "AND e.is_primary = 1 ORDER BY e.id LIMIT 1)",
        ),
        F(
            "email_billing",
            INT,
            "Billing Email",
            type="Extra",
            readonly=True,
            fk_entity="Email",
            input_type="EntityRef",
            sql="(SELECT e.id FROM civicrm_email e WHERE e.contact_id = {a}.id "
            "AND e.is_billing = 1 ORDER BY e.id LIMIT 1)",
        ),
        F(
            "phone_primary",
            INT,
            "Primary Phone",
            type="Extra",
            readonly=True,
            fk_entity="Phone",
            input_type="EntityRef",
            sql="(SELECT p.id FROM civicrm_phone p WHERE p.contact_id = {a}.id "
            "AND p.is_primary = 1 ORDER BY p.id LIMIT 1)",
        ),
        F(
            "phone_billing",
            INT,
            "Billing Phone",
            type="Extra",
            readonly=True,
            fk_entity="Phone",
            input_type="EntityRef",
            sql="(SELECT p.id FROM civicrm_phone p WHERE p.contact_id = {a}.id "
            "AND p.is_billing = 1 ORDER BY p.id LIMIT 1)",
        ),
        F(
            "im_primary",
            INT,
            "Primary IM",
            type="Extra",
            readonly=True,
            fk_entity="IM",
            input_type="EntityRef",
            sql="NULL",  # no IM entity in the sandbox
        ),
        F(
            "im_billing",
            INT,
            "Billing IM",
            type="Extra",
            readonly=True,
            fk_entity="IM",
            input_type="EntityRef",
            sql="NULL",  # no IM entity in the sandbox
        ),
        F(
            "tags",
            "Array",
            "Tags",
            type="Filter",
            input_type="Select",
            description="Filter by tags (including child tags)",
            filter_sql="EXISTS (SELECT 1 FROM (SELECT entity_id, tag_id AS value "
            "FROM civicrm_entity_tag WHERE entity_table = 'civicrm_contact') m "
            "WHERE m.entity_id = {a}.id AND {cond})",
        ),
    ),
    label_field="display_name",
    icon="fa-address-book-o",
    searchable="primary",
    type=("DAOEntity",),
    actions=(
        "autocomplete",
        "create",
        "delete",
        "get",
        "getActions",
        "getChecksum",
        "getDuplicates",
        "getFields",
        "mergeDuplicates",
        "replace",
        "save",
        "update",
        "validateChecksum",
    ),
    read_perm=None,
    write_perm="edit all contacts",
    delete_perm="delete contacts",
    create_perm="add contacts",
    limited_scan_order=("sort_name",),
    full_update_output=True,
    update_extra=(("contact_id", None),),
)


def _location(title: str) -> Field:
    return F(
        "location_type_id",
        INT,
        title,
        options=LOCATION_TYPES,
        echo=True,
        default=1,
        description="Which Location does this record belong to.",
    )


def _contact_fk(required: bool = True) -> Field:
    return _fk("contact_id", "Contact ID", required=required, description="FK to Contact ID")


EMAIL = Entity(
    "Email",
    "civicrm_email",
    "Email",
    "Emails",
    "Email information for a specific location.",
    (
        _id("Email ID", "Unique Email ID"),
        _contact_fk(required=False),  # 5.77: an email may belong to no contact
        _location("Email Location Type"),
        F("email", STR, "Email", input_type="Email", required=True, description="Email address"),
        F(
            "is_primary",
            BOOL,
            "Is Primary",
            default=False,
            nullable=False,
            input_type="Radio",
            description="Is this the primary email address",
        ),
        F(
            "is_billing",
            BOOL,
            "Is Billing",
            default=False,
            nullable=False,
            description="Is this the billing?",
        ),
        F(
            "on_hold",
            INT,
            "On Hold",
            default=0,
            nullable=False,
            echo=True,
            options={0: "No", 1: "On Hold Bounce", 2: "On Hold Opt Out"},
            description="Implicit FK to civicrm_option_value where option_group = email_on_hold.",
        ),
        F(
            "is_bulkmail",
            BOOL,
            "Use for Bulk Mail",
            default=False,
            nullable=False,
            description="Is this address for bulk mail ?",
        ),
        F("hold_date", TS, "Hold Date", readonly=True, description="When the address went on bounce hold"),
        F(
            "reset_date",
            TS,
            "Reset Date",
            readonly=True,
            description="When the address bounce status was last reset",
        ),
        F("signature_text", TEXT, "Signature Text", description="Text formatted signature for the email."),
        F(
            "signature_html",
            TEXT,
            "Signature Html",
            input_type="RichTextEditor",
            description="HTML formatted signature for the email.",
        ),
    ),
    label_field="email",
    icon="fa-envelope-o",
)

PHONE = Entity(
    "Phone",
    "civicrm_phone",
    "Phone",
    "Phones",
    "Phone information for a specific location.",
    (
        _id("Phone ID", "Unique Phone ID"),
        _contact_fk(required=False),
        _location("Phone Location Type"),
        F(
            "is_primary",
            BOOL,
            "Is Primary",
            default=False,
            nullable=False,
            echo=True,
            input_type="Radio",
            description="Is this the primary phone for this contact and location.",
        ),
        F(
            "is_billing",
            BOOL,
            "Is Billing",
            default=False,
            nullable=False,
            description="Is this the billing?",
        ),
        F(
            "mobile_provider_id",
            INT,
            "Mobile Provider",
            description="Which Mobile Provider does this phone belong to.",
        ),
        F("phone", STR, "Phone", description="Complete phone number."),
        F("phone_ext", STR, "Phone Extension", description="Optional extension for a phone number."),
        F(
            "phone_numeric",
            STR,
            "Phone (Numeric)",
            readonly=True,
            description="Phone number stripped of all whitespace, letters, and punctuation.",
        ),
        F(
            "phone_type_id",
            INT,
            "Phone Type",
            options=PHONE_TYPES,
            description="Which type of phone does this number belongs.",
        ),
    ),
    label_field="phone",
    icon="fa-phone",
    create_silent=("phone_numeric",),
)

ADDRESS = Entity(
    "Address",
    "civicrm_address",
    "Address",
    "Addresses",
    "Stores the physical street / mailing address. This format should be capable of storing "
    "ALL international addresses.",
    (
        _id("Address ID", "Unique Address ID"),
        _contact_fk(required=False),  # 5.77: an address may belong to no contact (an event location)
        _location("Address Location Type"),
        F(
            "is_primary",
            BOOL,
            "Is Primary",
            default=False,
            nullable=False,
            echo=True,
            input_type="Radio",
            description="Is this the primary address.",
        ),
        F(
            "is_billing",
            BOOL,
            "Is Billing Address",
            default=False,
            nullable=False,
            description="Is this the billing address.",
        ),
        F(
            "street_address",
            STR,
            "Street Address",
            description="Concatenation of all routable street address components.",
        ),
        F(
            "street_number",
            INT,
            "Street Number",
            description="Numeric portion of address number on the street.",
        ),
        F("street_number_suffix", STR, "Street Number Suffix"),
        F("street_number_predirectional", STR, "Street Direction Prefix"),
        F("street_name", STR, "Street Name"),
        F("street_type", STR, "Street Type"),
        F("street_number_postdirectional", STR, "Street Direction Suffix"),
        F("street_unit", STR, "Street Unit"),
        F("supplemental_address_1", STR, "Supplemental Address 1"),
        F("supplemental_address_2", STR, "Supplemental Address 2"),
        F("supplemental_address_3", STR, "Supplemental Address 3"),
        F("city", STR, "City", description="City, Town or Village Name."),
        F("county_id", INT, "County ID", fk_entity="County"),
        F("state_province_id", INT, "State/Province ID", fk_entity="StateProvince"),
        F("postal_code_suffix", STR, "Postal Code Suffix"),
        F("postal_code", STR, "Postal Code"),
        F("usps_adc", STR, "USPS Code"),
        F(
            "country_id",
            INT,
            "Country ID",
            fk_entity="Country",
            options={
                1039: "Canada",
                1076: "France",
                1082: "Germany",
                1226: "United Kingdom",
                1228: "United States",
            },
        ),
        F("geo_code_1", FLOAT, "Latitude"),
        F("geo_code_2", FLOAT, "Longitude"),
        F("manual_geo_code", BOOL, "Is Manually Geocoded", default=False, nullable=False),
        F("timezone", STR, "Timezone"),
        F("name", STR, "Address Name"),
        _fk("master_id", "Master Address ID", "Address"),
        F(
            "proximity",
            BOOL,
            "Address Proximity",
            type="Filter",
            input_type="Location",
            description="Address is within a given distance to a location",
            filter_sql="proximity",
        ),
    ),
    icon="fa-map-marker",
    actions=(
        "autocomplete",
        "create",
        "delete",
        "get",
        "getActions",
        "getCoordinates",
        "getFields",
        "replace",
        "save",
        "update",
    ),
)

# what a ManagedEntity (an entity extensions may package) has besides the usual actions
MANAGED_ACTIONS = (
    "autocomplete",
    "create",
    "delete",
    "export",
    "get",
    "getActions",
    "getFields",
    "replace",
    "revert",
    "save",
    "update",
)

MANAGED_FIELDS = (
    # what 5.77 adds to entities an extension may package (ManagedEntity): never packaged here
    F(
        "has_base",
        BOOL,
        "Is Packaged",
        type="Extra",
        readonly=True,
        sql="0",
        description="Is provided by an extension",
    ),
    F(
        "base_module",
        STR,
        "Packaged Extension",
        type="Extra",
        readonly=True,
        sql="NULL",
        description="Name of extension which provides this package",
    ),
    F(
        "local_modified_date",
        TS,
        "Locally modified",
        type="Extra",
        readonly=True,
        sql="NULL",
        description="When the managed entity was changed from its original settings",
    ),
)

GROUP = Entity(
    "Group",
    "civicrm_group",
    "Group",
    "Groups",
    "Provide grouping of related contacts",
    (
        _id("Group ID", "Group ID"),
        F("name", STR, "Group Name", description="Internal name of Group."),
        F("title", STR, "Group Title", required=True, description="Alternative public title for this Group."),
        F("description", TEXT, "Group Description", description="Optional verbose description of the group."),
        F("source", STR, "Group Source", description="Module or process which created this group."),
        F("saved_search_id", INT, "Saved Search ID", fk_entity="SavedSearch"),
        F("is_active", BOOL, "Group Enabled", default=True, nullable=False),
        F(
            "visibility",
            STR,
            "Group Visibility Setting",
            default="User and User Admin Only",
            options={"User and User Admin Only": "User and User Admin Only", "Public Pages": "Public Pages"},
        ),
        F("where_clause", TEXT, "Group Where Clause", readonly=True),
        F("select_tables", TEXT, "Tables For Select Clause", readonly=True),
        F("where_tables", TEXT, "Tables For Where Clause", readonly=True),
        F(
            "group_type",
            STR,
            "Group Type",
            input_type="Select",
            serialize=1,
            options={"1": "Access Control", "2": "Mailing List"},
        ),
        F("cache_date", TS, "Group Cache Date", readonly=True),
        F("cache_fill_took", FLOAT, "Seconds taken by last cache fill", readonly=True),
        F("refresh_date", TS, "Next Group Refresh Time", readonly=True),
        F("parents", STR, "Group Parents", readonly=True),
        F("children", STR, "Group Children", readonly=True),
        F("is_hidden", BOOL, "Group is Hidden", default=False, nullable=False),
        F("is_reserved", BOOL, "Group is Reserved", default=False, nullable=False),
        _fk("created_id", "Created By Contact ID", default=ACTOR, echo=True),
        _fk("modified_id", "Modified By Contact ID", readonly=True),
        F("frontend_title", STR, "Public Group Title"),
        F("frontend_description", TEXT, "Public Group Description"),
        F(
            "contact_count",
            INT,
            "Contact Count",
            type="Extra",
            readonly=True,
            sql="(SELECT COUNT(*) FROM civicrm_group_contact gc WHERE gc.group_id = {a}.id "
            "AND gc.status = 'Added')",
        ),
        F("cache_expired", BOOL, "Cache Expired", type="Extra", readonly=True, sql="0"),
        F("has_base", BOOL, "Has smart base group", type="Extra", readonly=True, sql="0"),
        F("base_module", STR, "Base Module", type="Extra", readonly=True, sql="NULL"),
        F("local_modified_date", TS, "Local Modified Date", type="Extra", readonly=True, sql="NULL"),
    ),
    label_field="title",
    icon="fa-users",
    searchable="primary",
    write_perm="edit groups",
    delete_perm="edit groups",
    actions=(*MANAGED_ACTIONS, "refresh"),
)

GROUP_CONTACT = Entity(
    "GroupContact",
    "civicrm_group_contact",
    "Group Contact",
    "Group Contacts",
    "Join table sets membership for 'static' groups. Also used to store 'opt-out' entries for "
    "'query' type groups (status = 'OUT')",
    (
        _id("Group Contact ID", "primary key"),
        _fk("group_id", "Group ID", "Group", required=True, description="FK to civicrm_group"),
        _contact_fk(),
        F(
            "status",
            STR,
            "Group Contact Status",
            default="Added",
            echo=True,
            options={"Added": "Added", "Removed": "Removed", "Pending": "Pending"},
            description="status of contact relative to membership in group",
        ),
        F("location_id", INT, "Location ID", fk_entity="LocBlock"),
        _fk("email_id", "Email ID", "Email"),
    ),
    type=("DAOEntity", "EntityBridge"),
    full_update_output=True,
    write_trailer=("method", "tracking"),
)

TAG = Entity(
    "Tag",
    "civicrm_tag",
    "Tag",
    "Tags",
    "Provides support for flat or hierarchical classification of various types of entities "
    "(contacts, groups, actions...).",
    (
        _id("Tag ID", "Tag ID"),
        # required unless a label is given (5.77's required_if; rules.tag_label makes the name)
        F("name", STR, "Tag Name", unique=True, description="Unique machine name"),
        F("label", STR, "Tag Label", description="User-facing tag name"),
        F("description", STR, "Description", description="Optional verbose description of the tag."),
        _fk("parent_id", "Parent Tag ID", "Tag", description="Optional parent id for this tag."),
        F("is_selectable", BOOL, "Display Tag?", default=True, nullable=False),
        F("is_reserved", BOOL, "Reserved", default=False, nullable=False),
        F("is_tagset", BOOL, "Tagset", default=False, nullable=False),
        F(
            "used_for",
            STR,
            "Used For",
            default="civicrm_contact",
            echo=True,
            serialize=5,
            options={
                "civicrm_contact": "Contacts",
                "civicrm_activity": "Activities",
                "civicrm_case": "Cases",
                "civicrm_file": "Attachments",
                "civicrm_saved_search": "Saved Searches",
            },
        ),
        _fk("created_id", "Created By Contact ID", default=ACTOR, echo=True),
        F("color", STR, "Color", description="Hex color value e.g. #ffffff"),
        F("created_date", TS, "Tag Created Date", readonly=True, default=NOW, echo=True),
        *MANAGED_FIELDS,
    ),
    label_field="label",
    icon="fa-tag",
    create_compact_dates=True,
    # 5.77 lets anyone with 'access CiviCRM' create and update tags (the tagset widget);
    # deleting falls to the 'default' entry
    write_perm="access CiviCRM",
    delete_perm="administer CiviCRM",
    type=("DAOEntity", "SortableEntity"),
    actions=MANAGED_ACTIONS,
)

ENTITY_TAG = Entity(
    "EntityTag",
    "civicrm_entity_tag",
    "Entity Tag",
    "Entity Tags",
    "Tag entities (Contacts, Groups, Actions) to categories.",
    (
        _id("Entity Tag ID", "primary key"),
        F(
            "entity_table",
            STR,
            "Entity Table",
            default="civicrm_contact",
            echo=True,
            options={"civicrm_contact": "Contacts", "civicrm_activity": "Activities"},
            description="physical tablename for entity being joined to file, e.g. civicrm_contact",
        ),
        F(
            "entity_id",
            INT,
            "Entity ID",
            required=True,
            input_type="EntityRef",
            description="FK to entity table specified in entity_table column.",
        ),
        _fk("tag_id", "Tag ID", "Tag", required=True, description="FK to civicrm_tag"),
    ),
    type=("DAOEntity", "EntityBridge"),
)

ACTIVITY = Entity(
    "Activity",
    "civicrm_activity",
    "Activity",
    "Activities",
    "Other Activity details stored here include contact, location, details.",
    (
        _id("Activity ID", "Unique  Other Activity ID"),
        F(
            "source_record_id",
            INT,
            "Source Record",
            description="Artificial FK to original transaction (e.g. contribution) IF it is not "
            "an Activity. Entity table is discovered by filtering by the appropriate "
            "activity_type_id.",
        ),
        F(
            "activity_type_id",
            INT,
            "Activity Type ID",
            required=True,
            options=ACTIVITY_TYPES,
            description="FK to civicrm_option_value.id, that has to be valid, registered activity type.",
        ),
        F("subject", STR, "Subject", description="The subject/purpose/short description of the activity."),
        F(
            "activity_date_time",
            TS,
            "Activity Date",
            default=NOW,
            echo=True,
            description="Date and time this activity is scheduled to occur. Formerly named "
            "scheduled_date_time.",
        ),
        F(
            "duration",
            INT,
            "Duration",
            description="Planned or actual duration of activity "
            "expressed in minutes. Conglomerate of "
            "former duration_hours and "
            "duration_minutes.",
        ),
        F("location", STR, "Location", description="Location of the activity (optional, open text)."),
        _fk("phone_id", "Phone ID (called)", "Phone"),
        F("phone_number", STR, "Phone (called) Number"),
        F(
            "details",
            TEXT,
            "Details",
            input_type="RichTextEditor",
            description="Details about the activity (agenda, notes, etc).",
        ),
        F(
            "status_id",
            INT,
            "Activity Status",
            options=ACTIVITY_STATUS,
            default=2,
            echo=True,
            description="ID of the status this activity is currently in. Foreign key to "
            "civicrm_option_value.",
        ),
        F(
            "priority_id",
            INT,
            "Priority",
            options={1: "Urgent", 2: "Normal", 3: "Low"},
            default=2,
            echo=True,
            description="ID of the priority given to this activity. Foreign key to civicrm_option_value.",
        ),
        _fk("parent_id", "Parent Activity ID", "Activity"),
        F("is_test", BOOL, "Test", default=False, nullable=False, echo=False),
        F(
            "medium_id",
            INT,
            "Activity Medium",
            options={1: "In Person", 2: "Phone", 3: "Email", 4: "Fax", 5: "Letter Mail"},
        ),
        F("is_auto", BOOL, "Auto", default=False, nullable=False, echo=False),
        _fk("relationship_id", "Relationship ID", "Relationship"),
        F("is_current_revision", BOOL, "Is current (unused)", default=True, nullable=False, echo=False),
        _fk("original_id", "Original Activity ID", "Activity"),
        F(
            "result",
            STR,
            "Result",
            description="Currently being used to store result id for survey activity, FK to option value.",
        ),
        F("is_deleted", BOOL, "Activity is in the Trash", default=False, nullable=False, echo=False),
        F("engagement_level", INT, "Engagement Index"),
        F("weight", INT, "Order"),
        F("is_star", BOOL, "Is Starred", default=False, nullable=False, echo=False),
        F("created_date", TS, "Created Date", readonly=True, default=NOW, echo=True),
        F("modified_date", TS, "Modified Date", readonly=True, default=NOW, echo=True),
        _fk(
            "source_contact_id",
            "Activity Source Contact",
            type="Extra",
            required=True,
            description="Person who created this activity. Defaults to current user.",
        ),
        _fk(
            "target_contact_id",
            "Activity Targets",
            type="Extra",
            sql="NULL",
            description="Contact(s) involved in this activity.",
        ),
        _fk(
            "assignee_contact_id",
            "Activity Assignee",
            type="Extra",
            sql="NULL",
            description="Contact(s) assigned to this activity.",
        ),
        F("tags", INT, "Tags", type="Extra", sql="NULL", fk_entity="Tag", input_type="Select"),
    ),
    label_field="subject",
    icon="fa-tasks",
    searchable="primary",
    create_nulls=("created_date", "modified_date", "source_contact_id"),
    create_compact_dates=True,
)

NOTE = Entity(
    "Note",
    "civicrm_note",
    "Note",
    "Notes",
    "Notes can be linked to any object in the application.",
    (
        _id("Note ID", "Note ID"),
        F(
            "entity_table",
            STR,
            "Note Entity",
            default="civicrm_contact",
            echo=True,
            options={
                "civicrm_relationship": "Relationship",
                "civicrm_contact": "Contact",
                "civicrm_participant": "Participant",
                "civicrm_contribution": "Contribution",
                "civicrm_note": "Note",
            },
            description="Name of table where item being referenced is stored.",
        ),
        F(
            "entity_id",
            INT,
            "Note Entity ID",
            required=True,
            input_type="EntityRef",
            description="Foreign key to the referenced item.",
        ),
        F("note", TEXT, "Note", description="Note and/or Comment."),
        _fk(
            "contact_id",
            "Created By Contact ID",
            default=ACTOR,
            echo=True,
            description="FK to Contact ID creator",
        ),
        F("note_date", TS, "Note Date", default=NOW, echo=True, description="Date attached to the note"),
        F("created_date", TS, "Created Date", readonly=True, default=NOW, echo=True),
        F("modified_date", TS, "Note Modified Date", readonly=True, default=NOW, echo=True),
        F("subject", STR, "Subject", description="subject of note description"),
        F(
            "privacy",
            STR,
            "Privacy",
            default="0",
            echo=True,
            options={"0": "None", "1": "Author Only"},
            description="Foreign Key to Note Privacy Level (which is an option value pair and "
            "hence an implicit FK)",
        ),
    ),
    label_field="subject",
    icon="fa-sticky-note",
    create_compact_dates=True,
    create_raw_defaults=(("privacy", 0),),
)

RELATIONSHIP = Entity(
    "Relationship",
    "civicrm_relationship",
    "Relationship",
    "Relationships",
    "Relationship between any 2 types of contacts.",
    (
        _id("Relationship ID", "Relationship ID"),
        _fk("contact_id_a", "Contact A ID", required=True, description="id of the first contact"),
        _fk("contact_id_b", "Contact B ID", required=True, description="id of the second contact"),
        F(
            "relationship_type_id",
            INT,
            "Relationship Type ID",
            required=True,
            fk_entity="RelationshipType",
            options=RELATIONSHIP_TYPES,
            description="Type of relationship",
        ),
        F("start_date", DATE, "Relationship Start Date", description="date when the relationship started"),
        F("end_date", DATE, "Relationship End Date", description="date when the relationship ended"),
        F(
            "is_active",
            BOOL,
            "Relationship Is Active",
            default=True,
            nullable=False,
            echo=True,
            description="is the relationship active ?",
        ),
        F(
            "description",
            STR,
            "Relationship Description",
            description="Optional verbose description for the relationship.",
        ),
        F(
            "is_permission_a_b",
            INT,
            "Contact A has Permission Over Contact B",
            default=0,
            echo=True,
            nullable=False,
            options={0: "None", 1: "View and update", 2: "View only"},
        ),
        F(
            "is_permission_b_a",
            INT,
            "Contact B has Permission Over Contact A",
            default=0,
            echo=True,
            nullable=False,
            options={0: "None", 1: "View and update", 2: "View only"},
        ),
        F("created_date", TS, "Created Date", readonly=True, default=NOW, echo=True),
        F("modified_date", TS, "Relationship Modified Date", readonly=True, default=NOW, echo=True),
        F(
            "is_current",
            BOOL,
            "Is Current",
            type="Extra",
            readonly=True,
            sql="({a}.is_active = 1 AND ({a}.start_date IS NULL OR {a}.start_date <= "
            "date('now')) AND ({a}.end_date IS NULL OR {a}.end_date >= date('now')))",
        ),
    ),
    icon="fa-handshake-o",
)

_money = dict(input_type="Text")
CONTRIBUTION = Entity(
    "Contribution",
    "civicrm_contribution",
    "Contribution",
    "Contributions",
    "Financial records consisting of transactions, line-items, etc.",
    (
        _id("Contribution ID", "Contribution ID"),
        _contact_fk(),
        F(
            "financial_type_id",
            INT,
            "Financial Type ID",
            required=True,
            fk_entity="FinancialType",
            options=FINANCIAL_TYPES,
            description="FK to Financial Type for (total_amount - non_deductible_amount).",
        ),
        F("contribution_page_id", INT, "Contribution Page ID", fk_entity="ContributionPage"),
        F(
            "payment_instrument_id",
            INT,
            "Payment Method ID",
            options=PAYMENT_INSTRUMENTS,
            description="FK to Payment Instrument",
        ),
        F("receive_date", TS, "Contribution Date", default=NOW, echo=True),
        F("non_deductible_amount", MONEY, "Non-deductible Amount", default=0.0, echo=True, **_money),
        F(
            "total_amount",
            MONEY,
            "Total Amount",
            required=True,
            **_money,
            description="Total amount of this contribution. Use market value for non-monetary gifts.",
        ),
        F("fee_amount", MONEY, "Fee Amount", **_money),
        F("net_amount", MONEY, "Net Amount", **_money),
        F("trxn_id", STR, "Transaction ID"),
        F("invoice_id", STR, "Invoice Reference"),
        F("invoice_number", STR, "Invoice Number"),
        F(
            "currency",
            STR,
            "Currency",
            default="USD",
            echo=True,
            options={"USD": "US Dollar", "EUR": "Euro", "GBP": "Pound Sterling", "CAD": "Canadian Dollar"},
        ),
        F("cancel_date", TS, "Cancelled / Refunded Date"),
        F("cancel_reason", TEXT, "Cancellation / Refund Reason"),
        F("receipt_date", TS, "Receipt Date"),
        F("thankyou_date", TS, "Thank-you Date"),
        F("source", STR, "Contribution Source"),
        F("amount_level", TEXT, "Amount Label"),
        F("contribution_recur_id", INT, "Recurring Contribution ID", fk_entity="ContributionRecur"),
        F("is_test", BOOL, "Test", default=False, nullable=False, echo=True),
        F("is_pay_later", BOOL, "Is Pay Later", default=False, nullable=False, echo=True),
        F(
            "contribution_status_id",
            INT,
            "Contribution Status ID",
            default=1,
            echo=True,
            options=CONTRIBUTION_STATUS,
        ),
        _fk("address_id", "Address ID", "Address"),
        F("check_number", STR, "Check Number"),
        F("creditnote_id", STR, "Credit Note ID"),
        F("tax_amount", MONEY, "Tax Amount", default=0.0, echo=True, **_money),
        F("revenue_recognition_date", TS, "Revenue Recognition Date"),
        F("is_template", BOOL, "Is a Template Contribution", default=False, nullable=False, echo=True),
        F(
            "paid_amount",
            MONEY,
            "Amount Paid",
            type="Extra",
            readonly=True,
            sql="(CASE WHEN {a}.contribution_status_id = 1 THEN {a}.total_amount ELSE 0 END)",
        ),
        F(
            "balance_amount",
            MONEY,
            "Balance",
            type="Extra",
            readonly=True,
            sql="(CASE WHEN {a}.contribution_status_id = 1 THEN 0 ELSE {a}.total_amount END)",
        ),
        F(
            "tax_exclusive_amount",
            MONEY,
            "Tax Exclusive Amount",
            type="Extra",
            readonly=True,
            sql="({a}.total_amount - COALESCE({a}.tax_amount, 0))",
        ),
    ),
    icon="fa-credit-card",
    searchable="primary",
    read_perm="access CiviContribute",
    write_perm="edit contributions",
    delete_perm="delete in CiviContribute",
)

# ---- option lists (OptionGroup / OptionValue), membership and events ----------------------
# Option groups the sandbox seeds, in id order; each with its values (store.initialise).
PREFERRED_COMMUNICATION = {1: "Phone", 2: "Email", 3: "Postal Mail", 4: "SMS", 5: "Fax"}
MEMBERSHIP_TYPES = {1: "General", 2: "Student", 3: "Lifetime"}
MEMBERSHIP_STATUS = {
    1: "New",
    2: "Current",
    3: "Grace",
    4: "Expired",
    5: "Pending",
    6: "Cancelled",
    7: "Deceased",
}
EVENT_TYPES = {
    1: "Conference",
    2: "Exhibition",
    3: "Fundraiser",
    4: "Meeting",
    5: "Performance",
    6: "Workshop",
}
PARTICIPANT_STATUS = {
    1: "Registered",
    2: "Attended",
    3: "No-show",
    4: "Cancelled",
    5: "Pending from pay later",
    6: "Pending from incomplete transaction",
}
PARTICIPANT_ROLES = {1: "Attendee", 2: "Volunteer", 3: "Host", 4: "Speaker"}
OPTION_GROUPS: tuple[tuple[str, str, dict[Any, str]], ...] = (
    ("preferred_communication_method", "Preferred Communication Method", PREFERRED_COMMUNICATION),
    ("activity_type", "Activity Type", ACTIVITY_TYPES),
    ("gender", "Gender", GENDER),
    ("individual_prefix", "Individual contact prefixes", {1: "Mrs.", 2: "Ms.", 3: "Mr.", 4: "Dr."}),
    ("activity_status", "Activity Status", ACTIVITY_STATUS),
    ("contribution_status", "Contribution Status", CONTRIBUTION_STATUS),
    ("payment_instrument", "Payment Methods", PAYMENT_INSTRUMENTS),
    ("event_type", "Event Type", EVENT_TYPES),
    ("participant_role", "Participant Role", PARTICIPANT_ROLES),
)
OPTION_GROUP_NAMES = {i: name for i, (name, _, _) in enumerate(OPTION_GROUPS, start=1)}

OPTION_GROUP = Entity(
    "OptionGroup",
    "civicrm_option_group",
    "Option Group",
    "Option Groups",
    "Option groups: named lists of choices (option values).",
    (
        _id("Option Group ID", "Option Group ID"),
        F(
            "name",
            STR,
            "Option Group Name",
            required=True,
            description="Option group name. Used as selection key by class properties which "
            "lookup options in civicrm_option_value.",
        ),
        F("title", STR, "Option Group Title", description="Option Group title."),
        F("description", TEXT, "Option Group Description", description="Option group description."),
        F(
            "data_type",
            STR,
            "Data Type",
            options={"String": "Text", "Integer": "Integer", "Boolean": "Yes/No", "Date": "Date"},
            description="Type of data stored by this option group.",
        ),
        F(
            "is_reserved",
            BOOL,
            "Option Group Is Reserved",
            default=True,
            nullable=False,
            echo=True,
            description="Is this a predefined system option group (i.e. it can not be deleted)?",
        ),
        F(
            "is_active",
            BOOL,
            "Enabled",
            default=True,
            nullable=False,
            echo=True,
            description="Is this option group active?",
        ),
        F(
            "is_locked",
            BOOL,
            "Option Group Is Locked",
            default=False,
            nullable=False,
            echo=True,
            description="A lock to remove the ability to add new options via the UI.",
        ),
        F(
            "option_value_fields",
            STR,
            "Option Value Fields",
            serialize=1,
            default="name,label,description",
            echo=True,
            options={
                "name": "Name",
                "label": "Label",
                "description": "Description",
                "color": "Color",
                "icon": "Icon",
            },
            description="Which optional columns from the option_value table are in use by this group.",
        ),
        *MANAGED_FIELDS,
    ),
    label_field="title",
    icon="fa-list-ol",
    write_perm="administer CiviCRM",
    delete_perm="administer CiviCRM",
    actions=MANAGED_ACTIONS,
)

OPTION_VALUE = Entity(
    "OptionValue",
    "civicrm_option_value",
    "Option Value",
    "Option Values",
    "Option values: one choice of an option group.",
    (
        _id("Option Value ID", "Option ID"),
        F(
            "option_group_id",
            INT,
            "Option Group ID",
            required=True,
            fk_entity="OptionGroup",
            options=OPTION_GROUP_NAMES,
            input_type="Select",
            description="Group which this option belongs to.",
        ),
        F(
            "label",
            STR,
            "Option Label",
            required=True,
            description="Option string as displayed to users - e.g. the label in an HTML OPTION tag.",
        ),
        F(
            "value",
            STR,
            "Option Value",
            required=True,
            description="The actual value stored (as a foreign key) in the data record. "
            "Functions which need lookup option_value.title should use "
            "civicrm_option_value.option_group_id plus "
            "civicrm_option_value.value as the key.",
        ),
        F(
            "name",
            STR,
            "Option Name",
            description="Stores a fixed (non-translated) name for "
            "this option value. Lookup functions should "
            "use the name as the key for the option "
            "value row.",
        ),
        F(
            "grouping",
            STR,
            "Option Grouping Name",
            description="Use to sort and/or set display properties for sub-set(s) of options "
            "within an option group.",
        ),
        F(
            "filter",
            INT,
            "Filter",
            default=0,
            echo=True,
            description="Bitwise logic can be used to create subsets of options within an "
            "option_group for different uses.",
        ),
        F(
            "is_default",
            BOOL,
            "Option is Default?",
            default=False,
            echo=True,
            description="Is this the default option for the group?",
        ),
        F("weight", INT, "Order", required=True, description="Controls display sort order."),
        F("description", TEXT, "Option Description", description="Optional description."),
        F(
            "is_optgroup",
            BOOL,
            "Option is Header?",
            default=False,
            nullable=False,
            echo=True,
            description="Is this row simply a display header?",
        ),
        F(
            "is_reserved",
            BOOL,
            "Option Is Reserved?",
            default=False,
            nullable=False,
            echo=True,
            description="Is this a predefined system object?",
        ),
        F(
            "is_active",
            BOOL,
            "Option Is Active",
            default=True,
            nullable=False,
            echo=True,
            description="Is this option active?",
        ),
        F(
            "component_id",
            INT,
            "Component ID",
            fk_entity="Component",
            description="Component that this option value belongs/caters to.",
        ),
        F(
            "domain_id",
            INT,
            "Domain ID",
            fk_entity="Domain",
            description="Which Domain is this option value for",
        ),
        F("visibility_id", INT, "Option Visibility"),
        F("icon", STR, "Icon", description="crm-i icon class"),
        F("color", STR, "Color", description="Hex color value e.g. #ffffff"),
        *MANAGED_FIELDS,
    ),
    label_field="label",
    icon="fa-list-ol",
    write_perm="administer CiviCRM",
    delete_perm="administer CiviCRM",
    actions=MANAGED_ACTIONS,
)

MEMBERSHIP = Entity(
    "Membership",
    "civicrm_membership",
    "Membership",
    "Memberships",
    "Contact Membership records.",
    (
        _id("Membership ID", "Membership ID"),
        _fk("contact_id", "Contact ID", required=True, description="FK to Contact ID"),
        F(
            "membership_type_id",
            INT,
            "Membership Type ID",
            required=True,
            fk_entity="MembershipType",
            options=MEMBERSHIP_TYPES,
            description="FK to Membership Type",
        ),
        F(
            "join_date",
            DATE,
            "Member Since",
            default=NOW,
            echo=True,
            description="Beginning of initial membership period (member since...).",
        ),
        F(
            "start_date",
            DATE,
            "Membership Start Date",
            description="Beginning of current uninterrupted membership period.",
        ),
        F(
            "end_date",
            DATE,
            "Membership Expiration Date",
            description="Current membership period expire date.",
        ),
        F("source", STR, "Membership Source"),
        F(
            "status_id",
            INT,
            "Membership Status ID",
            options=MEMBERSHIP_STATUS,
            default=1,
            echo=True,
            fk_entity="MembershipStatus",
            description="FK to Membership Status",
        ),
        F(
            "is_override",
            BOOL,
            "Status Override",
            default=False,
            nullable=False,
            echo=True,
            description="Admin users may set a manual status which overrides the calculated "
            "status. When this flag is true, automated status update scripts "
            "should NOT modify status for the record.",
        ),
        F("status_override_end_date", DATE, "Status Override End Date"),
        _fk(
            "owner_membership_id",
            "Primary Member ID",
            "Membership",
            description="Optional FK to Parent Membership.",
        ),
        F(
            "max_related",
            INT,
            "Max Related",
            description="Maximum number of related memberships (membership_type override).",
        ),
        F("is_test", BOOL, "Test", default=False, nullable=False, echo=True),
        F("is_pay_later", BOOL, "Is Pay Later", default=False, nullable=False, echo=True),
        F("contribution_recur_id", INT, "Recurring Contribution ID", fk_entity="ContributionRecur"),
        F(
            "is_primary_member",
            BOOL,
            "Primary Member",
            type="Extra",
            readonly=True,
            sql="({a}.owner_membership_id IS NULL)",
        ),
    ),
    label_field="id",
    icon="fa-id-badge",
    searchable="primary",
    read_perm="access CiviMember",
    write_perm="edit memberships",
    delete_perm="delete in CiviMember",
)

_event_text = (
    "summary",
    "description",
    "registration_link_text",
    "event_full_text",
    "fee_label",
    "intro_text",
    "footer_text",
    "confirm_title",
    "confirm_text",
    "confirm_footer_text",
    "confirm_email_text",
    "confirm_from_name",
    "confirm_from_email",
    "cc_confirm",
    "bcc_confirm",
    "thankyou_title",
    "thankyou_text",
    "thankyou_footer_text",
    "pay_later_text",
    "pay_later_receipt",
    "initial_amount_label",
    "initial_amount_help_text",
    "waitlist_text",
    "approval_req_text",
    "template_title",
)
_EVENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("title", STR),
    ("summary", TEXT),
    ("description", TEXT),
    ("event_type_id", INT),
    ("participant_listing_id", INT),
    ("is_public", BOOL),
    ("start_date", TS),
    ("end_date", TS),
    ("is_online_registration", BOOL),
    ("registration_link_text", STR),
    ("registration_start_date", TS),
    ("registration_end_date", TS),
    ("max_participants", INT),
    ("event_full_text", TEXT),
    ("is_monetary", BOOL),
    ("financial_type_id", INT),
    ("payment_processor", STR),
    ("is_map", BOOL),
    ("is_active", BOOL),
    ("fee_label", STR),
    ("is_show_location", BOOL),
    ("loc_block_id", INT),
    ("default_role_id", INT),
    ("intro_text", TEXT),
    ("footer_text", TEXT),
    ("confirm_title", STR),
    ("confirm_text", TEXT),
    ("confirm_footer_text", TEXT),
    ("is_email_confirm", BOOL),
    ("confirm_email_text", TEXT),
    ("confirm_from_name", STR),
    ("confirm_from_email", STR),
    ("cc_confirm", STR),
    ("bcc_confirm", STR),
    ("default_fee_id", INT),
    ("default_discount_fee_id", INT),
    ("thankyou_title", STR),
    ("thankyou_text", TEXT),
    ("thankyou_footer_text", TEXT),
    ("is_pay_later", BOOL),
    ("pay_later_text", TEXT),
    ("pay_later_receipt", TEXT),
    ("is_partial_payment", BOOL),
    ("initial_amount_label", STR),
    ("initial_amount_help_text", TEXT),
    ("min_initial_amount", MONEY),
    ("is_multiple_registrations", BOOL),
    ("max_additional_participants", INT),
    ("allow_same_participant_emails", BOOL),
    ("has_waitlist", BOOL),
    ("requires_approval", BOOL),
    ("expiration_time", INT),
    ("allow_selfcancelxfer", BOOL),
    ("selfcancelxfer_time", INT),
    ("waitlist_text", TEXT),
    ("approval_req_text", TEXT),
    ("is_template", BOOL),
    ("template_title", STR),
    ("created_id", INT),
    ("created_date", TS),
    ("currency", STR),
    ("is_share", BOOL),
    ("is_confirm_enabled", BOOL),
    ("parent_event_id", INT),
    ("slot_label_id", INT),
    ("dedupe_rule_group_id", INT),
    ("is_billing_required", BOOL),
    ("is_show_calendar_links", BOOL),
)
_EVENT_SPECIAL: dict[str, dict[str, Any]] = {
    "title": {"required": True},
    "event_type_id": {"options": EVENT_TYPES, "required": True},
    "start_date": {"required": True},
    "default_role_id": {"options": PARTICIPANT_ROLES, "default": 1, "echo": True},
    "financial_type_id": {"options": FINANCIAL_TYPES, "fk_entity": "FinancialType"},
    "created_id": {"fk_entity": "Contact", "default": ACTOR, "input_type": "EntityRef"},
    "created_date": {"default": NOW, "echo": True, "readonly": True},
    "parent_event_id": {"fk_entity": "Event", "input_type": "EntityRef"},
    "is_active": {"default": True, "echo": True},
    "is_public": {"default": True, "echo": True},
}


def _event_field(name: str, data_type: str) -> Field:
    kw = dict(_EVENT_SPECIAL.get(name, {}))
    if data_type == BOOL:
        kw.setdefault("default", False)
        kw.setdefault("echo", True)
        kw["nullable"] = False
    title = name.replace("_", " ").title().replace(" Id", " ID")
    return F(name, data_type, title, **kw)


EVENT = Entity(
    "Event",
    "civicrm_event",
    "Event",
    "Events",
    "Event Information",
    (
        _id("Event ID", "Event"),
        *(_event_field(n, t) for n, t in _EVENT_COLUMNS),
        F(
            "is_current",
            BOOL,
            "Is Current",
            type="Extra",
            readonly=True,
            sql="(({a}.start_date IS NULL OR {a}.start_date <= datetime('now')) AND "
            "({a}.end_date IS NULL OR {a}.end_date >= datetime('now')))",
        ),
        F(
            "remaining_participants",
            INT,
            "Remaining Participants",
            type="Extra",
            readonly=True,
            sql="(CASE WHEN {a}.max_participants IS NULL THEN NULL ELSE {a}.max_participants "
            "- (SELECT COUNT(*) FROM civicrm_participant p WHERE p.event_id = {a}.id) END)",
        ),
    ),
    label_field="title",
    icon="fa-calendar",
    searchable="primary",
    read_perm="access CiviEvent",
    write_perm="edit all events",
    delete_perm="delete in CiviEvent",
)

PARTICIPANT = Entity(
    "Participant",
    "civicrm_participant",
    "Participant",
    "Participants",
    "Participant records of contacts in events.",
    (
        _id("Participant ID", "Participant ID"),
        _fk("contact_id", "Contact ID", required=True, description="FK to Contact ID"),
        _fk("event_id", "Event ID", "Event", required=True, description="FK to Event ID"),
        F(
            "status_id",
            INT,
            "Status ID",
            options=PARTICIPANT_STATUS,
            default=1,
            echo=True,
            fk_entity="ParticipantStatusType",
            description="Participant status ID. FK to civicrm_participant_status_type.",
        ),
        F(
            "role_id",
            STR,
            "Participant Role",
            options=PARTICIPANT_ROLES,
            serialize=1,
            input_type="Select",
            description="Participant role ID. Implicit FK to "
            "civicrm_option_value where option_group = "
            "participant_role.",
        ),
        F(
            "register_date",
            TS,
            "Register date",
            default=NOW,
            echo=True,
            description="When did contact register for event?",
        ),
        F("source", STR, "Participant Source", description="Source of this event registration."),
        F(
            "fee_level",
            TEXT,
            "Fee level",
            description="Populate with the label (text) "
            "associated with a fee level for paid "
            "events with multiple levels.",
        ),
        F("is_test", BOOL, "Test", default=False, nullable=False, echo=True),
        F("is_pay_later", BOOL, "Is Pay Later", default=False, nullable=False, echo=True),
        F("fee_amount", MONEY, "Fee Amount", input_type="Text"),
        _fk("registered_by_id", "Registered By Participant ID", "Participant"),
        F("discount_id", INT, "Discount ID", fk_entity="Discount"),
        F("fee_currency", STR, "Fee Currency"),
        F("discount_amount", INT, "Discount Amount"),
        F("must_wait", INT, "Must Wait on List"),
        _fk("transferred_to_contact_id", "Transferred to Contact ID"),
        _fk("created_id", "Created by Contact ID", default=ACTOR),
    ),
    label_field="id",
    icon="fa-ticket",
    searchable="primary",
    read_perm="access CiviEvent",
    write_perm="edit event participants",
    delete_perm="edit event participants",
)

# The custom field group every sandbox has (CiviCRM's sample data ships the same one).
CONSTITUENT_INFORMATION = CustomGroup(
    "Constituent_Information",
    "Constituent Information",
    "Contact",
    "civicrm_value_constituent_information_1",
    (
        F(
            "Most_Important_Issue",
            STR,
            "Most Important Issue",
            type="Custom",
            input_type="Radio",
            custom_group="Constituent_Information",
            column="most_important_issue_1",
            options={"Edu": "Education", "Env": "Environment", "Cul": "Arts and Culture"},
        ),
        F(
            "Marital_Status",
            STR,
            "Marital Status",
            type="Custom",
            input_type="Select",
            custom_group="Constituent_Information",
            column="marital_status_2",
            options={"S": "Single", "M": "Married", "D": "Divorced", "W": "Widowed"},
        ),
        F(
            "Marital_Date",
            DATE,
            "Marital Date",
            type="Custom",
            input_type="Date",
            custom_group="Constituent_Information",
            column="marital_date_3",
        ),
    ),
)

ENTITIES: dict[str, Entity] = {
    e.name: e
    for e in (
        ACTIVITY,
        ADDRESS,
        CONTACT,
        CONTRIBUTION,
        EMAIL,
        ENTITY_TAG,
        EVENT,
        GROUP,
        GROUP_CONTACT,
        MEMBERSHIP,
        NOTE,
        OPTION_GROUP,
        OPTION_VALUE,
        PARTICIPANT,
        PHONE,
        RELATIONSHIP,
        TAG,
    )
}

CUSTOM_GROUPS: dict[str, CustomGroup] = {CONSTITUENT_INFORMATION.name: CONSTITUENT_INFORMATION}

# Entities answered by code rather than a table ("meta" entities).
META_ENTITIES = ("Entity", "Setting")


def emulated_entities() -> list[str]:
    """Every APIv4 entity the sandbox serves (what its Entity.get lists), sorted."""
    return sorted([*ENTITIES, *META_ENTITIES])


def custom_fields(entity: str) -> list[Field]:
    """Custom fields extending ``entity``, named ``Group.Field`` as APIv4 shows them."""
    out = []
    for group in CUSTOM_GROUPS.values():
        if group.extends == entity:
            for f in group.fields:
                out.append(Field(**{**f.__dict__, "name": f"{group.name}.{f.name}"}))
    return out


def all_fields(entity: str) -> list[Field]:
    return [*ENTITIES[entity].fields, *custom_fields(entity)]


def ddl() -> list[str]:
    """CREATE TABLE statements for every entity and custom group (foreign keys enforced)."""
    sqltype = {INT: "INTEGER", BOOL: "INTEGER", MONEY: "REAL", FLOAT: "REAL"}
    stmts = []
    for ent in ENTITIES.values():
        cols = []
        for f in ent.fields:
            if f.sql or f.filter_sql:
                continue
            if f.name == "id":
                cols.append('"id" INTEGER PRIMARY KEY AUTOINCREMENT')
                continue
            col = f'"{f.name}" {sqltype.get(f.data_type, "TEXT")}'
            if f.unique:
                col += " UNIQUE"
            if f.fk_entity in ENTITIES:
                contact_data = f.name == "contact_id" and ent.name in ("Email", "Phone", "Address")
                on_delete = "CASCADE" if f.required or contact_data else "SET NULL"
                col += f" REFERENCES {ENTITIES[f.fk_entity].table}(id) ON DELETE {on_delete}"
            cols.append(col)
        stmts.append(f"CREATE TABLE {ent.table} ({', '.join(cols)})")
    for group in CUSTOM_GROUPS.values():
        parent = ENTITIES[group.extends].table
        cols = [
            '"id" INTEGER PRIMARY KEY AUTOINCREMENT',
            f'"entity_id" INTEGER NOT NULL UNIQUE REFERENCES {parent}(id) ON DELETE CASCADE',
        ]
        cols += [f'"{f.column}" {sqltype.get(f.data_type, "TEXT")}' for f in group.fields]
        stmts.append(f"CREATE TABLE {group.table} ({', '.join(cols)})")
    return stmts
